package chat

// DefaultKeyPrefix is the prefix of every Redis key, as in the original system.
const DefaultKeyPrefix = "opencontext:"

// Keys builds chatbuf's Redis keys under one prefix. Each conversation's keys
// carry its tag in braces, so they share a Redis Cluster slot.
type Keys struct {
	prefix string
}

// NewKeys returns the key layout under prefix ("" means DefaultKeyPrefix).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix returns the prefix every key starts with.
func (k Keys) Prefix() string { return k.prefix }

// conv is "<prefix><kind>:{<tag>}", built in one allocation.
func (k Keys) conv(kind string, c Conversation) string {
	return k.prefix + kind + ":{" + EscapeID(c.User) + ":" + EscapeID(c.Device) + ":" + EscapeID(c.Agent) + "}"
}

// Buffer is the conversation's buffer (LIST of records).
func (k Keys) Buffer(c Conversation) string { return k.conv("chat:buffer", c) }

// Inflight holds a claimed, not yet committed batch (LIST of records).
func (k Keys) Inflight(c Conversation) string { return k.conv("chat:inflight", c) }

// Meta holds the conversation's batch counter and the in-flight batch's
// token, reason and creation time (HASH).
func (k Keys) Meta(c Conversation) string { return k.conv("chat:meta", c) }

// Dedupe holds the dedupe keys seen within the dedupe window (ZSET, scored by
// the time they were first seen).
func (k Keys) Dedupe(c Conversation) string { return k.conv("chat:dedupe", c) }

// Lock is the conversation's flush lock (redsync).
func (k Keys) Lock(c Conversation) string { return k.conv("lock:chat:flush", c) }

// Fence holds the fencing token of the flush lock's current owner (STRING).
func (k Keys) Fence(c Conversation) string { return k.conv("lock:chat:fence", c) }

// Due is the due index: conversations with buffered or in-flight messages,
// scored by the receive time of their oldest one, in milliseconds (ZSET).
func (k Keys) Due() string { return k.prefix + "chat:due" }

// DueSlot is the due index of one Redis Cluster slot: used on a cluster, so
// that each conversation's scripts touch keys of its own slot only. slotTag
// is chat.SlotTag of the conversation's slot.
func (k Keys) DueSlot(slotTag string) string { return k.prefix + "chat:due:{" + slotTag + "}" }

// DueSlots lists the slot tags whose DueSlot index has been used (SET, at
// most 16384 members).
func (k Keys) DueSlots() string { return k.prefix + "chat:due:slots" }

// Idle is the idle index: conversations with buffered messages, scored by
// the time of their last append, in milliseconds (ZSET). Kept only when
// CHAT_FLUSH_IDLE is set.
func (k Keys) Idle() string { return k.prefix + "chat:idle" }

// IdleSlot is the idle index of one Redis Cluster slot (see DueSlot).
func (k Keys) IdleSlot(slotTag string) string { return k.prefix + "chat:idle:{" + slotTag + "}" }
