package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/opencontext/chatbuf/completion"
)

// The completion routes answer in OpenContext's completion shape
// ({"success": ...}) through the workers' completion service. The cache is
// per user: the user is the query parameter user_id, "default" without it.
const defaultCompletionUser = "default"

func completionUser(r *http.Request) string {
	if u := r.URL.Query().Get("user_id"); u != "" {
		return u
	}
	return defaultCompletionUser
}

// callCompletion sends a request to an endpoint of the completion service
// and returns its answer. A service error becomes an error with its code;
// no service, 503.
func (g *gateway) callCompletion(ctx context.Context, endpoint string, req any) (json.RawMessage, int, error) {
	if !g.nc.IsConnected() {
		return nil, http.StatusServiceUnavailable, errUnavailable
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.FlushTimeout)
	defer cancel()
	subject := completion.ServiceName + "." + endpoint
	msg, err := g.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, http.StatusServiceUnavailable, fmt.Errorf("completion service unavailable: no worker serves %s", subject)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, http.StatusServiceUnavailable, fmt.Errorf("completion service unavailable: no answer on %s within %v", subject, g.o.FlushTimeout)
	case err != nil:
		return nil, http.StatusServiceUnavailable, fmt.Errorf("completion service: %w", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		status := http.StatusInternalServerError
		if code == "400" {
			status = http.StatusBadRequest
		}
		return nil, status, fmt.Errorf("completion service: %s", msg.Header.Get(micro.ErrorHeader))
	}
	return msg.Data, http.StatusOK, nil
}

func (g *gateway) completionFailed(w http.ResponseWriter, r *http.Request, status int, err error) {
	g.log.Warn("http: completion request failed", "path", r.URL.Path, "status", status, "error", err)
	writeJSON(w, status, ordered{"success", false, "error", err.Error()})
}

func (g *gateway) cacheStats(w http.ResponseWriter, r *http.Request) {
	stats, status, err := g.callCompletion(r.Context(), "stats", struct{}{})
	if err != nil {
		g.completionFailed(w, r, status, err)
		return
	}
	writeJSON(w, http.StatusOK, ordered{"success", true, "data", stats,
		"timestamp", time.Now().Format("2006-01-02T15:04:05.000000")})
}

func (g *gateway) cacheClear(w http.ResponseWriter, r *http.Request) {
	empty := ""
	_, status, err := g.callCompletion(r.Context(), "invalidate", map[string]any{"user": completionUser(r), "prefix": &empty})
	if err != nil {
		g.completionFailed(w, r, status, err)
		return
	}
	writeJSON(w, http.StatusOK, ordered{"success", true, "message", "Cache cleared"})
}

// precompute stores the document's content as its precomputed context:
// {"document_id": N, "content": "..."}.
func (g *gateway) precompute(w http.ResponseWriter, r *http.Request) {
	var errs []verr
	idText := r.PathValue("document_id")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		in, _ := json.Marshal(idText)
		errs = append(errs, verr{Type: "int_parsing", Loc: []any{"path", "document_id"}, Input: in,
			Msg: "Input should be a valid integer, unable to parse string as an integer"})
	}
	q := r.URL.Query()
	if !q.Has("content") {
		errs = append(errs, missing([]any{"query", "content"}, nil))
	}
	if errs != nil {
		g.invalid(w, r, errs)
		return
	}
	value, _ := json.Marshal(ordered{"document_id", id, "content", q.Get("content")})
	_, status, err := g.callCompletion(r.Context(), "precompute", map[string]any{
		"user": completionUser(r), "doc_id": strconv.FormatInt(id, 10), "value": json.RawMessage(value)})
	if err != nil {
		g.completionFailed(w, r, status, err)
		return
	}
	writeJSON(w, http.StatusOK, ordered{"success", true,
		"message", fmt.Sprintf("Document %d context precomputation completed", id)})
}
