package main

import (
	"strconv"
	"strings"

	"github.com/opencontext/chatbuf/chat"
)

// hostileCount is the number of hostile conversations --hostile adds.
const hostileCount = 16

// conversations returns n conversations of run: with hostile, the first
// ones have hostile ids (but none holding a byte of avoid), the rest are
// load-<run>-u<i>/d<i%4>/a.
func conversations(run string, n int, hostile bool, avoid string) []chat.Conversation {
	cs := make([]chat.Conversation, 0, n)
	if hostile {
		for _, c := range hostileConversations(run) {
			if avoid == "" || !strings.ContainsAny(c.User+c.Device+c.Agent, avoid) {
				cs = append(cs, c)
			}
		}
	}
	for i := len(cs); i < n; i++ {
		cs = append(cs, chat.Conversation{User: "load-" + run + "-u" + strconv.Itoa(i), Device: "d" + strconv.Itoa(i%4), Agent: "a"})
	}
	return cs
}

// hostileConversations are valid ids that break naive key building,
// escaping or subject building: Redis key separators, and the bytes a
// subject token holds only encoded (. * > space %). The run id sits in
// another position or in front, so that runs do not collide, while the
// hostile characters stay literal.
func hostileConversations(run string) []chat.Conversation {
	p := "load-" + run + "-"
	long := p + "long-ü-"
	long += strings.Repeat(".", chat.MaxIDLen-len(long)) // exactly 128 bytes, a token three times as long
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
		{User: p + "alice.smith@example.com", Device: "d", Agent: "a"},
		{User: p + "spaces", Device: "Bob's phone", Agent: " my bot "},
		{User: p + "wildcards", Device: "*", Agent: ">"},
		{User: p + "dots", Device: "..", Agent: "."},
		{User: run + "-名前 ü", Device: "téléphone", Agent: "a\u00a0b"},
		{User: p + "mixed", Device: "a.b c:d@e", Agent: "%2A*"},
		// Two triples that share a subject unless % is encoded too.
		{User: run + "-p.q", Device: "d", Agent: "a"},
		{User: run + "-p%2Eq", Device: "d", Agent: "a"},
	}
}
