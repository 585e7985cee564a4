package main

import (
	"strconv"
	"strings"

	"github.com/opencontext/chatbuf/chat"
)

// hostileCount is the number of hostile conversations --hostile adds.
const hostileCount = 8

// conversations returns n conversations of run: with hostile, the first
// hostileCount have hostile ids, the rest are load-<run>-u<i>/d<i%4>/a.
func conversations(run string, n int, hostile bool) []chat.Conversation {
	cs := make([]chat.Conversation, 0, n)
	if hostile {
		cs = append(cs, hostileConversations(run)...)
	}
	for i := len(cs); i < n; i++ {
		cs = append(cs, chat.Conversation{User: "load-" + run + "-u" + strconv.Itoa(i), Device: "d" + strconv.Itoa(i%4), Agent: "a"})
	}
	return cs
}

// hostileConversations are valid ids that break naive key building or
// escaping. The run id sits in another position or in front, so that runs
// do not collide, while the hostile characters stay literal.
func hostileConversations(run string) []chat.Conversation {
	p := "load-" + run + "-"
	long := p + "long-ü-"
	long += strings.Repeat("x", chat.MaxIDLen-len(long)) // exactly 128 bytes
	return []chat.Conversation{
		{User: run + "-user:1", Device: "d", Agent: "a"},
		{User: p + "braces", Device: "a{b}", Agent: "a"},
		{User: run + "-ü-ser", Device: "d", Agent: "a"},
		{User: "_", Device: p + "blank", Agent: "_"},
		{User: long, Device: "d", Agent: "a"},
		{User: p + "percent", Device: "d", Agent: "100%"},
		// Two triples that share "a:b:c:d" unless ids are escaped.
		{User: run + "-a:b", Device: "c", Agent: "d"},
		{User: run + "-a", Device: "b:c", Agent: "d"},
	}
}
