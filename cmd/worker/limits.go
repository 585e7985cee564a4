package main

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/opencontext/chatbuf/chat"
)

// batchHeaderRoom is what a batch leaves free of the server's max_payload:
// room for its headers, and for a dead letter's (Chatbuf-Reason,
// Chatbuf-Error of at most 256 bytes, Chatbuf-Subject, Nats-Msg-Id).
const batchHeaderRoom = 4096

// batchCeiling returns the ceiling of a batch's JSON on a server with the
// given max_payload: CHAT_BATCH_MAX_BYTES, or max_payload minus
// batchHeaderRoom when it is unset. The error names the variables, their
// values and the limit when CHAT_BATCH_MAX_BYTES leaves no room for the
// headers, or when one message of CHAT_MAX_MESSAGE_BYTES could not fit a
// batch alone.
func batchCeiling(c config, maxPayload int64) (int, error) {
	room := int(maxPayload) - batchHeaderRoom
	ceiling, name := c.BatchMaxBytes, fmt.Sprintf("CHAT_BATCH_MAX_BYTES=%d", c.BatchMaxBytes)
	if ceiling == 0 {
		ceiling, name = room, fmt.Sprintf("CHAT_BATCH_MAX_BYTES (unset: max_payload %d - %d = %d)", maxPayload, batchHeaderRoom, room)
	} else if ceiling > room {
		return 0, fmt.Errorf("%s: over the NATS server's max_payload %d minus %d bytes for headers (at most %d)",
			name, maxPayload, batchHeaderRoom, room)
	}
	if w := chat.WorstBatchBytes(c.MaxMessageBytes); w > ceiling {
		return 0, fmt.Errorf("CHAT_MAX_MESSAGE_BYTES=%d: one message of that size makes a batch of up to %d bytes, over %s; "+
			"lower CHAT_MAX_MESSAGE_BYTES or raise the server's max_payload", c.MaxMessageBytes, w, name)
	}
	return ceiling, nil
}

// batchLimits follows the server's max_payload across (re)connections: the
// first connection decides the batch ceiling (or refuses the
// configuration); a later server with a smaller limit makes the worker not
// ready, with the reason.
type batchLimits struct {
	cfg config
	log *slog.Logger

	mu       sync.Mutex
	ceiling  int   // decided at the first connection
	startErr error // the first connection's verdict
	notReady error // a later server's limit is too small
	first    chan struct{}
}

func newBatchLimits(cfg config, log *slog.Logger) *batchLimits {
	return &batchLimits{cfg: cfg, log: log, first: make(chan struct{})}
}

// connected is called on each (re)connection with the server's max_payload.
func (l *batchLimits) connected(maxPayload int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.first:
	default:
		l.ceiling, l.startErr = batchCeiling(l.cfg, maxPayload)
		if l.startErr == nil {
			l.log.Info("nats: batch ceiling", "max_payload", maxPayload, "chat_batch_max_bytes", l.ceiling,
				"chat_max_message_bytes", l.cfg.MaxMessageBytes)
		}
		close(l.first)
		return
	}
	if l.startErr != nil {
		return
	}
	var err error
	if room := int(maxPayload) - batchHeaderRoom; l.ceiling > room {
		err = fmt.Errorf("nats: this server's max_payload %d leaves %d bytes for a batch, under the batch ceiling %d (CHAT_BATCH_MAX_BYTES) "+
			"decided at start: batches may be refused", maxPayload, room, l.ceiling)
	}
	if err != nil && l.notReady == nil {
		l.log.Error("nats: server's max_payload too small for this worker's batches; not ready", "error", err)
	} else if err == nil && l.notReady != nil {
		l.log.Info("nats: server's max_payload fits the batch ceiling again", "max_payload", maxPayload, "chat_batch_max_bytes", l.ceiling)
	}
	l.notReady = err
}

// ready reports why batches may not fit the current server, if they may not.
func (l *batchLimits) ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.first:
	default:
		return errors.New("nats: max_payload not known yet (never connected)")
	}
	if l.startErr != nil {
		return l.startErr
	}
	return l.notReady
}

// wait returns the ceiling once the first connection decided it, or the
// reason the configuration cannot run; done stops the wait.
func (l *batchLimits) wait(done <-chan struct{}) (int, error) {
	select {
	case <-l.first:
	case <-done:
		return 0, errors.New("stopped before the first connection to NATS")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ceiling, l.startErr
}
