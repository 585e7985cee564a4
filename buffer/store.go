// Package buffer keeps each conversation's buffered messages and its
// claimed, not yet published batch: in Redis (Redis) or in process memory
// (Memory, for a single instance or while Redis is unreachable). Both give
// the same guarantees, checked by one conformance suite.
//
// A message moves buffer -> in-flight -> gone: Append adds it, Claim moves up
// to a batch of messages into the in-flight batch and gives the batch its
// token, Commit deletes the in-flight batch once it was published (or
// dead-lettered whole). An in-flight batch never expires: its messages were
// acked long ago, so it lives until it is committed. A flusher
// that dies between Claim and Commit leaves the in-flight batch in place; the
// next Claim returns that same batch, so it is published again under the same
// id and nothing is lost.
//
// Claim and Commit take a fencing token from the conversation's flush lock.
// The store remembers the highest token it has seen per conversation and
// refuses a lower one (ErrFenced), so a flusher whose lock expired can no
// longer change the conversation.
package buffer

import (
	"context"
	"errors"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Defaults of Config.
const (
	DefaultTTL          = 24 * time.Hour
	DefaultDedupeWindow = 24 * time.Hour
)

var (
	// ErrFenced: a newer lock owner has claimed or committed since; the
	// caller lost its lock.
	ErrFenced = errors.New("buffer: fenced by a newer lock owner")
	// ErrNoBatch: Commit of a batch that is not in flight (already committed).
	ErrNoBatch = errors.New("buffer: no such batch in flight")
	// ErrNotReplicated: the append is in Redis, but not on WaitReplicas
	// replicas within WaitTimeout; retry it (it is deduplicated) rather than
	// ack it.
	ErrNotReplicated = errors.New("buffer: not replicated")
)

// Config tunes a Store. Zero values mean the defaults.
type Config struct {
	KeyPrefix    string           // Redis only; "" means chat.DefaultKeyPrefix
	TTL          time.Duration    // buffer safety-net TTL, refreshed on every append
	DedupeWindow time.Duration    // how long a dedupe key is remembered
	Now          func() time.Time // the clock; time.Now when nil
	// WaitReplicas, when > 0 (Redis only), makes AppendBatch wait until that
	// many replicas have its writes (WAIT, once per batch and master) before
	// it reports success, so that a failover cannot lose acked messages.
	WaitReplicas int
	WaitTimeout  time.Duration // how long to wait for them (1s when zero)
	// TrackIdle keeps each buffered conversation's last append time, for
	// Idle and ClaimOptions.IdleBefore (CHAT_FLUSH_IDLE).
	TrackIdle bool
}

func (c Config) withDefaults() Config {
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = time.Second
	}
	return c
}

// Item is one message to append.
type Item struct {
	Conv   chat.Conversation
	Key    string // dedupe key (chat.Message.DedupeKey)
	Record []byte // chat record (chat.NewRecord); its header holds the receive time and Pos
	// Redelivered: delivered before, so an earlier attempt may have put it
	// into a store that this process cannot see (the fallback uses it).
	Redelivered bool
}

// Appended is the outcome of appending one Item.
type Appended struct {
	Dup  bool  // the dedupe key was seen within the window: nothing appended
	Len  int64 // the buffer's length after the append
	Err  error // Redis refused this item's conversation (AppendBatch only)
	Held bool  // stored in process memory only: do not ack until released (see Memory)
}

// Pos is a message's place in CHAT_IN: the stream's creation time (unix ms;
// 0 when unknown) and the message's stream sequence. A buffer keeps its
// records sorted by Pos.
type Pos struct {
	Epoch int64
	Seq   uint64
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool {
	return p.Epoch < q.Epoch || (p.Epoch == q.Epoch && p.Seq < q.Seq)
}

// ClaimOptions says what a Claim may take. A new batch is the buffer's longest
// prefix that respects Max, Through and MaxBytes and ends at the first
// record marked End; it is claimed when
//   - it ends at a record marked End (reason end), or
//   - the next record would not fit MaxBytes (reason bytes), or
//   - it holds at least Min records (Reason; a full batch asked for by the
//     end trigger is a size batch), or
//   - the buffer's oldest message was received before Before, or its last
//     append was before IdleBefore (Reason).
type ClaimOptions struct {
	Max    int          // at most this many messages (> 0)
	Min    int          // claim only if at least Min records may be claimed...
	Before time.Time    // ...or the oldest message was received before Before (zero: no age rule)
	Reason chat.Trigger // recorded with a new batch
	// Through, when set, bounds a new batch to records at or before it:
	// later ones may still have an earlier message of their conversation
	// on its way into the buffer.
	Through *Pos
	// Settled: every message of the conversation at or before Through is
	// in the buffer or flushed. Otherwise the message at Through may still
	// be on its way (a record at Through is settled: it is appended).
	Settled bool
	// MaxBytes, when > 0, bounds the sum of the records' Cost (the batch's
	// JSON without its fixed part); a batch holds at least one record.
	MaxBytes int
	// IdleBefore: claim what may be claimed when the conversation's last
	// append was before this (zero: no idle rule). The store tracks last
	// appends only when Config.TrackIdle is set.
	IdleBefore time.Time
}

// Batch is a claimed batch.
type Batch struct {
	Token   int64        // strictly increasing per conversation; the batch's fencing_token
	Reason  chat.Trigger // the reason given when the batch was first claimed
	Created time.Time    // when the batch was first claimed
	Records [][]byte     // chat records, in buffer order
	Resumed bool         // this batch was claimed before by a flusher that did not commit
	// Blocked: nothing was claimed although the buffer holds enough, because
	// records beyond ClaimOptions.Through would have been needed; try again soon.
	Blocked bool
	// Beyond, when Blocked and ClaimOptions.Through is settled or the record at
	// it is in the buffer, lists the seqs of the records after it (same
	// epoch, up to Max in all): whether they may go too depends on
	// messages between them still being stored in CHAT_IN.
	Beyond  []uint64
	PrevPos uint64 // the sink position of the conversation's last committed batch (0: none known)
}

// Store is a set of conversation buffers.
type Store interface {
	// Append appends one message, unless its dedupe key was seen within the
	// dedupe window.
	Append(ctx context.Context, it Item) (Appended, error)
	// AppendBatch appends many messages, of any conversations, in one round
	// trip, in order. An error that concerns one conversation only (Redis
	// refused its script) is reported in that conversation's items' Err; the
	// call's error means the whole batch is in doubt, and appending it again
	// is safe (what was appended is deduplicated).
	AppendBatch(ctx context.Context, items []Item) ([]Appended, error)
	// Claim returns the conversation's in-flight batch if there is one, or
	// else moves up to w.Max messages into a new in-flight batch when w
	// allows. It returns a zero Batch (Token 0) when there is nothing to
	// claim, and ErrFenced when a higher fence was seen.
	Claim(ctx context.Context, c chat.Conversation, fence int64, w ClaimOptions) (Batch, error)
	// Commit deletes the in-flight batch with the given token, records pos
	// as the sink position of the conversation's last batch, and returns the
	// buffer's remaining length. ErrFenced when fence is not the highest
	// seen; ErrNoBatch when that batch is not in flight.
	Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error)
	// Retoken gives the in-flight batch with the given token a new token,
	// above both above and every token so far, and returns it; for a batch
	// the sink refused because it holds a later one. ErrFenced and
	// ErrNoBatch as for Commit.
	Retoken(ctx context.Context, c chat.Conversation, fence, token, above int64) (int64, error)
	// Refused records that the sink refused the in-flight batch with the
	// given token at time at, unless a refusal of that batch is recorded
	// already, and returns the time of its first recorded refusal. The
	// record lives with the batch (it moves between workers and survives
	// their restarts) and ends with its Commit. ErrFenced and ErrNoBatch as
	// for Commit.
	Refused(ctx context.Context, c chat.Conversation, fence, token int64, at time.Time) (since time.Time, err error)
	// Due returns up to limit conversations whose oldest buffered or
	// in-flight message was received before t, oldest first.
	Due(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error)
	// Idle returns up to limit conversations with buffered messages whose
	// last append was before t, longest idle first (Config.TrackIdle).
	Idle(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error)
	// Oldest returns the receive time of the oldest buffered or in-flight
	// message of all conversations; ok is false when all buffers are empty.
	Oldest(ctx context.Context) (t time.Time, ok bool, err error)
	// Len returns the length of a conversation's buffer (not counting its
	// in-flight batch).
	Len(ctx context.Context, c chat.Conversation) (int64, error)
}

// nextToken is the token after last: at least last+1, and at least now in
// microseconds. Tokens so keep increasing even if a conversation's state
// expired and started over, and a batch claimed later (by wall clock) gets a
// higher token than one claimed earlier in another store, which matters when
// the fallback hands a conversation between memory and Redis.
func nextToken(last int64, now time.Time) int64 {
	return max(last+1, now.UnixMicro())
}

// ClaimReq is one conversation's claim in ClaimMany.
type ClaimReq struct {
	Conv  chat.Conversation
	Fence int64
	Want  ClaimOptions
}

// CommitReq is one batch's commit in CommitMany.
type CommitReq struct {
	Conv  chat.Conversation
	Fence int64
	Token int64
	Pos   uint64
}

// ManyStore claims and commits the batches of many conversations in one go
// (one round trip for Redis). Per-request failures (ErrFenced, ErrNoBatch, a
// refused script) are in errs; err is for the whole call.
type ManyStore interface {
	Store
	ClaimMany(ctx context.Context, reqs []ClaimReq) (batches []Batch, errs []error, err error)
	CommitMany(ctx context.Context, reqs []CommitReq) (remaining []int64, errs []error, err error)
}
