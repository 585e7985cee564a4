package completion

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Service identity and subjects. Every worker registers the same service;
// micro's default queue group makes each request go to one of them.
const (
	ServiceName    = "completion"
	ServiceVersion = "1.0.0"
)

// requestTimeout bounds the cache work behind one request.
const requestTimeout = 5 * time.Second

// Requests and replies of the endpoints, as JSON.
type (
	getRequest struct {
		User        string `json:"user"`
		Key         string `json:"key"`
		ContextHash string `json:"context_hash,omitempty"`
	}
	getReply struct {
		Hit         bool         `json:"hit"`
		Suggestions []Suggestion `json:"suggestions,omitempty"`
	}
	putRequest struct {
		User        string       `json:"user"`
		Key         string       `json:"key"`
		Suggestions []Suggestion `json:"suggestions"`
		ContextHash string       `json:"context_hash,omitempty"`
		Confidence  float64      `json:"confidence"`
	}
	okReply struct {
		OK bool `json:"ok"`
	}
	invalidateRequest struct {
		User   string  `json:"user"`
		Key    string  `json:"key,omitempty"`
		Prefix *string `json:"prefix,omitempty"` // "" removes all of user's entries
	}
	invalidateReply struct {
		Removed int `json:"removed"`
	}
	precomputeRequest struct {
		User  string          `json:"user"`
		DocID string          `json:"doc_id"`
		Value json.RawMessage `json:"value"`
	}
	precomputedRequest struct {
		User  string `json:"user"`
		DocID string `json:"doc_id"`
	}
	precomputedReply struct {
		Hit   bool            `json:"hit"`
		Value json.RawMessage `json:"value,omitempty"`
	}
)

// NewService registers the completion service on nc: endpoints
// completion.get, completion.put, completion.invalidate, completion.stats,
// completion.precompute and completion.precomputed, with JSON bodies. A bad
// request is answered with a micro error of code 400, a backend failure
// with 500. Stop the returned service to unregister.
func NewService(nc *nats.Conn, c Cache, logger *slog.Logger) (micro.Service, error) {
	if logger == nil {
		logger = slog.Default()
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "per-user completion suggestion cache",
	})
	if err != nil {
		return nil, err
	}
	h := &handlers{c: c, log: logger}
	g := svc.AddGroup("completion")
	for name, f := range map[string]func(context.Context, micro.Request){
		"get":         h.get,
		"put":         h.put,
		"invalidate":  h.invalidate,
		"stats":       h.stats,
		"precompute":  h.precompute,
		"precomputed": h.precomputed,
	} {
		if err := g.AddEndpoint(name, h.wrap(f)); err != nil {
			return nil, errors.Join(err, svc.Stop())
		}
	}
	return svc, nil
}

type handlers struct {
	c   Cache
	log *slog.Logger

	mu         sync.Mutex // guards the rate limit of backend error logs
	lastLog    time.Time
	suppressed int
}

func (h *handlers) wrap(f func(context.Context, micro.Request)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		f(ctx, req)
	})
}

// decode reads the JSON body into v, answering 400 when it cannot.
func (h *handlers) decode(req micro.Request, v any) bool {
	if err := json.Unmarshal(req.Data(), v); err != nil {
		h.respondErr(req, "400", "bad request: "+err.Error())
		return false
	}
	return true
}

// fail answers an error from the cache: 400 for bad input, else 500.
func (h *handlers) fail(req micro.Request, err error) {
	if errors.Is(err, ErrInvalid) {
		h.respondErr(req, "400", err.Error())
		return
	}
	h.logBackendError(req.Subject(), err)
	h.respondErr(req, "500", "internal error")
}

// logBackendError logs at most one backend error a second (an outage fails
// every request), with the number of errors it left out.
func (h *handlers) logBackendError(subject string, err error) {
	h.mu.Lock()
	now := time.Now()
	if now.Sub(h.lastLog) < time.Second {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	n := h.suppressed
	h.lastLog, h.suppressed = now, 0
	h.mu.Unlock()
	h.log.Error("completion: request failed", "subject", subject, "error", err, "suppressed", n)
}

func (h *handlers) respondErr(req micro.Request, code, msg string) {
	if err := req.Error(code, msg, nil); err != nil {
		h.log.Warn("completion: cannot respond", "subject", req.Subject(), "error", err)
	}
}

func (h *handlers) respond(req micro.Request, v any) {
	if err := req.RespondJSON(v); err != nil {
		h.log.Warn("completion: cannot respond", "subject", req.Subject(), "error", err)
	}
}

func (h *handlers) get(ctx context.Context, req micro.Request) {
	var r getRequest
	if !h.decode(req, &r) {
		return
	}
	s, err := h.c.Get(ctx, r.User, r.Key, r.ContextHash)
	switch {
	case errors.Is(err, ErrMiss):
		h.respond(req, getReply{})
	case err != nil:
		h.fail(req, err)
	default:
		h.respond(req, getReply{Hit: true, Suggestions: s})
	}
}

func (h *handlers) put(ctx context.Context, req micro.Request) {
	var r putRequest
	if !h.decode(req, &r) {
		return
	}
	if err := h.c.Put(ctx, r.User, r.Key, r.Suggestions, r.ContextHash, r.Confidence); err != nil {
		h.fail(req, err)
		return
	}
	h.respond(req, okReply{OK: true})
}

func (h *handlers) invalidate(ctx context.Context, req micro.Request) {
	var r invalidateRequest
	if !h.decode(req, &r) {
		return
	}
	if (r.Key == "") == (r.Prefix == nil) {
		h.respondErr(req, "400", "bad request: give exactly one of key and prefix")
		return
	}
	var n int
	var err error
	if r.Prefix != nil {
		n, err = h.c.InvalidatePrefix(ctx, r.User, *r.Prefix)
	} else {
		n, err = h.c.Invalidate(ctx, r.User, r.Key)
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	h.respond(req, invalidateReply{Removed: n})
}

func (h *handlers) stats(ctx context.Context, req micro.Request) {
	s, err := h.c.Stats(ctx)
	if err != nil {
		h.fail(req, err)
		return
	}
	h.respond(req, s)
}

func (h *handlers) precompute(ctx context.Context, req micro.Request) {
	var r precomputeRequest
	if !h.decode(req, &r) {
		return
	}
	if err := h.c.PutPrecomputed(ctx, r.User, r.DocID, r.Value); err != nil {
		h.fail(req, err)
		return
	}
	h.respond(req, okReply{OK: true})
}

func (h *handlers) precomputed(ctx context.Context, req micro.Request) {
	var r precomputedRequest
	if !h.decode(req, &r) {
		return
	}
	v, err := h.c.GetPrecomputed(ctx, r.User, r.DocID)
	switch {
	case errors.Is(err, ErrMiss):
		h.respond(req, precomputedReply{})
	case err != nil:
		h.fail(req, err)
	default:
		h.respond(req, precomputedReply{Hit: true, Value: v})
	}
}
