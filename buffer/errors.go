package buffer

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Store errors fall in two classes. An error that belongs to one
// conversation (a key of the wrong type in its place) is reported per item
// (Appended.Err) and may, when it persists, dead-letter that conversation's
// messages. Every other error concerns the store as a whole (full,
// read-only, refusing permissions, failing over, unreachable, or a reply
// not recognised): AppendBatch fails as a whole, nothing of the batch is
// acked, and the caller retries the same batch until the store takes it.

// conversationErrors are the reply prefixes that belong to one
// conversation's keys.
var conversationErrors = []string{"WRONGTYPE"}

// StoreWide reports whether err concerns the store as a whole rather than
// one conversation's keys. Any error not known to belong to a conversation
// is store-wide.
func StoreWide(err error) bool {
	if err == nil {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true
	}
	p := replyPrefix(rerr.Error())
	for _, c := range conversationErrors {
		if p == c {
			return false
		}
	}
	return true
}

// Refusal kinds, for metrics and logs: the lower-case prefix of a Redis
// error reply for the ones listed, "not_replicated" for ErrNotReplicated,
// "unreachable" for an error without a reply (network, timeout, closed
// client), and "other" for any other reply.
var refusalKinds = []string{"OOM", "NOPERM", "READONLY", "MASTERDOWN", "LOADING", "BUSY",
	"CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "NOSCRIPT", "MOVED", "ASK", "MISCONF", "NOAUTH", "WRONGPASS"}

// RefusalKind names the kind of a store-wide error: "oom", "noperm",
// "readonly", "masterdown", "loading", "busy", "clusterdown", "tryagain",
// "noreplicas", "noscript", "misconf", "noauth", "not_replicated",
// "unreachable" or "other".
func RefusalKind(err error) string {
	if errors.Is(err, ErrNotReplicated) {
		return "not_replicated"
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return "unreachable"
	}
	p := replyPrefix(rerr.Error())
	if p == "WRONGPASS" {
		return "noauth"
	}
	for _, k := range refusalKinds {
		if p == k {
			return strings.ToLower(k)
		}
	}
	return "other"
}

// Unreachable reports whether err means Redis cannot be used at all: no
// reply (network, timeout, closed client), or a reply saying it serves no
// data yet (LOADING, MASTERDOWN). Those are what the in-memory fallback
// stands in for; a Redis that answers and refuses (full, read-only, missing
// permissions) is reachable, and its refusals are waited out instead.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, ErrNotReplicated) {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true
	}
	switch replyPrefix(rerr.Error()) {
	case "LOADING", "MASTERDOWN":
		return true
	}
	return false
}

// replyPrefix is the error code of a Redis error reply: its first word.
func replyPrefix(s string) string {
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}
