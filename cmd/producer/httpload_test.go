package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// httpRecorder stands in for the gateway's /api/push/chat/messages: it
// records the messages of accepted requests and answers 503 to the first
// request (a retry must follow) or refuse to every request.
type httpRecorder struct {
	mu       sync.Mutex
	requests int
	sizes    []int
	byConv   map[string][]int // markers' n per conversation, in arrival order
	refuse   int              // status for every request; 0: accept
}

func (h *httpRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" || r.URL.Path != "/api/push/chat/messages" {
		http.Error(w, "wrong route", http.StatusNotFound)
		return
	}
	var req struct {
		Messages []httpMessage `json:"messages"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	switch {
	case h.refuse != 0:
		w.WriteHeader(h.refuse)
		return
	case h.requests == 1:
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	h.sizes = append(h.sizes, len(req.Messages))
	for _, m := range req.Messages {
		marker, _, _ := strings.Cut(m.Content, " ")
		_, num, _ := strings.Cut(marker, "/")
		n, _ := strconv.Atoi(num)
		key := m.UserID + "|" + m.DeviceID + "|" + m.AgentID
		h.byConv[key] = append(h.byConv[key], n)
	}
	w.Write([]byte(`{"code":0,"status":200,"message":"ok"}`))
}

func TestLoadHTTP(t *testing.T) {
	h := &httpRecorder{byConv: map[string][]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	got := runProducer(t.Context(), "nats://127.0.0.1:1", "", "load", "--json", "--http", srv.URL,
		"--conversations", "20", "--messages", "300", "--hostile", "--batch", "7", "--conns", "5")
	if got.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", got.code, got.stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(got.stdout), &s); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, got.stdout)
	}
	if s.Published != 300 || s.Failures != 0 || s.Retries != 1 || s.PubAck.Count != 300 {
		t.Errorf("summary %+v: want 300 published, no failure, one retry", s)
	}
	total := 0
	for _, n := range h.sizes {
		if n < 1 || n > 7 {
			t.Errorf("a request with %d messages, want 1-7", n)
		}
		total += n
	}
	if total != 300 || len(h.byConv) != 20 {
		t.Errorf("%d messages in %d conversations accepted, want 300 in 20", total, len(h.byConv))
	}
	for conv, ns := range h.byConv {
		for i := 1; i < len(ns); i++ {
			if ns[i] <= ns[i-1] {
				t.Errorf("conversation %s: message %d after %d, want load order", conv, ns[i], ns[i-1])
			}
		}
	}
}

// A refusal other than 503 is not retried: its messages fail, exit 1.
func TestLoadHTTPRefused(t *testing.T) {
	h := &httpRecorder{byConv: map[string][]int{}, refuse: http.StatusUnauthorized}
	srv := httptest.NewServer(h)
	defer srv.Close()
	got := runProducer(t.Context(), "nats://127.0.0.1:1", "", "load", "--json", "--http", srv.URL,
		"--conversations", "2", "--messages", "10", "--batch", "5", "--conns", "1")
	if got.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", got.code, got.stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(got.stdout), &s); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, got.stdout)
	}
	if s.Published != 0 || s.Failures != 10 || s.Retries != 0 || h.requests != 2 || len(s.Errors) == 0 || !strings.Contains(s.Errors[0], "401") {
		t.Errorf("summary %+v after %d requests: want 10 failed in 2 requests, no retry, the 401 named", s, h.requests)
	}
}
