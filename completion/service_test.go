package completion

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/opencontext/chatbuf/internal/redistest"
)

func startNATS(t *testing.T) string {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	s := natsserver.RunServer(&opts)
	if s == nil {
		t.Fatal("embedded nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// decodeJSON decodes b keeping numbers exact, for comparing JSON values.
func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

func TestService(t *testing.T) {
	url := startNATS(t)
	srv := redistest.Start(t)
	clk := newFakeClock()
	// Two workers on one Redis register the same service: either answers.
	for range 2 {
		c, err := NewRedis(srv.Client(t), Config{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := NewService(connect(t, url), c, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := svc.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	client := connect(t, url)

	// The steps run in order: later ones see what earlier ones stored.
	tests := []struct {
		name      string
		subject   string
		body      string
		wantCode  string // micro error code; "" for success
		wantReply string // JSON, compared as values
	}{
		{name: "get miss", subject: "completion.get", body: `{"user":"alice","key":"k"}`, wantReply: `{"hit":false}`},
		{
			name:      "put",
			subject:   "completion.put",
			body:      `{"user":"alice","key":"k","context_hash":"h","confidence":0.9,"suggestions":[{"text":"hello","kind":"template","score":0.5,"metadata":{"n":12345678901234567890}}]}`,
			wantReply: `{"ok":true}`,
		},
		{
			name:      "get hit",
			subject:   "completion.get",
			body:      `{"user":"alice","key":"k","context_hash":"h"}`,
			wantReply: `{"hit":true,"suggestions":[{"text":"hello","kind":"template","score":0.5,"metadata":{"n":12345678901234567890}}]}`,
		},
		{name: "other user misses", subject: "completion.get", body: `{"user":"bob","key":"k"}`, wantReply: `{"hit":false}`},
		{name: "other context hash misses", subject: "completion.get", body: `{"user":"alice","key":"k","context_hash":"x"}`, wantReply: `{"hit":false}`},
		{name: "stats", subject: "completion.stats", body: ``, wantReply: `{"total_requests":4,"hits":1,"misses":3,"evictions":0,"hit_rate":0.25}`},
		{name: "precompute", subject: "completion.precompute", body: `{"user":"alice","doc_id":"d1","value":{"summary":"s"}}`, wantReply: `{"ok":true}`},
		{name: "precomputed hit", subject: "completion.precomputed", body: `{"user":"alice","doc_id":"d1"}`, wantReply: `{"hit":true,"value":{"summary":"s"}}`},
		{name: "precomputed miss", subject: "completion.precomputed", body: `{"user":"alice","doc_id":"d2"}`, wantReply: `{"hit":false}`},
		{name: "invalidate prefix", subject: "completion.invalidate", body: `{"user":"alice","prefix":"*"}`, wantReply: `{"removed":0}`},
		{name: "invalidate key", subject: "completion.invalidate", body: `{"user":"alice","key":"k"}`, wantReply: `{"removed":1}`},
		{name: "invalidated", subject: "completion.get", body: `{"user":"alice","key":"k"}`, wantReply: `{"hit":false}`},
		{name: "bad json", subject: "completion.get", body: `{"user":`, wantCode: "400"},
		{name: "wrong field type", subject: "completion.put", body: `{"user":"alice","key":"k","confidence":"high"}`, wantCode: "400"},
		{name: "missing user", subject: "completion.get", body: `{"key":"k"}`, wantCode: "400"},
		{name: "key and prefix", subject: "completion.invalidate", body: `{"user":"alice","key":"k","prefix":"k"}`, wantCode: "400"},
		{name: "neither key nor prefix", subject: "completion.invalidate", body: `{"user":"alice"}`, wantCode: "400"},
		{name: "bad precomputed value", subject: "completion.precompute", body: `{"user":"alice","doc_id":"d"}`, wantCode: "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := client.Request(tt.subject, []byte(tt.body), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			code := msg.Header.Get(micro.ErrorCodeHeader)
			if code != tt.wantCode {
				t.Fatalf("error code = %q (%s), want %q", code, msg.Header.Get(micro.ErrorHeader), tt.wantCode)
			}
			if tt.wantCode != "" {
				if msg.Header.Get(micro.ErrorHeader) == "" {
					t.Fatal("error without a description")
				}
				return
			}
			if diff := cmp.Diff(decodeJSON(t, []byte(tt.wantReply)), decodeJSON(t, msg.Data)); diff != "" {
				t.Fatalf("reply (-want +got):\n%s", diff)
			}
		})
	}

	// The service is discoverable through micro's own endpoints.
	msg, err := client.Request("$SRV.INFO.completion", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != ServiceName || info.Version != ServiceVersion || len(info.Endpoints) != 6 {
		t.Fatalf("info = %s %s with %d endpoints", info.Name, info.Version, len(info.Endpoints))
	}
}

func TestServiceBackendError(t *testing.T) {
	url := startNATS(t)
	srv := redistest.Start(t)
	c, err := NewRedis(srv.Client(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(connect(t, url), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Stop(); err != nil {
			t.Error(err)
		}
	})
	srv.Stop()
	msg, err := connect(t, url).Request("completion.get", []byte(`{"user":"alice","key":"k"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "500" {
		t.Fatalf("error code = %q, want 500", code)
	}
}
