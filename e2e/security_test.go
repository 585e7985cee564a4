package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// newSecret returns a random password that no log line could hold by chance.
func newSecret(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return what + "-" + hex.EncodeToString(b)
}

// secureNATS is the nats-server binary running deploy/nats-server.conf.
type secureNATS struct {
	srv       *natstest.Server
	certs     redistest.Certs
	mutual    bool
	passwords map[string]string // NATS user -> password
}

// startSecureNATS starts nats-server with deploy/nats-server.conf: its TLS
// files, store directory and monitoring port replaced for the test, the
// passwords it reads from the environment made up here. mutual turns on
// its commented-out `verify: true` (client certificates required).
func startSecureNATS(t *testing.T, certs redistest.Certs, mutual bool) *secureNATS {
	t.Helper()
	b, err := os.ReadFile("../deploy/nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(conf, old) {
			t.Fatalf("deploy/nats-server.conf has no %q: update the test", old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	replace("/etc/chatbuf/tls/nats.crt", strconv.Quote(certs.ServerCert))
	replace("/etc/chatbuf/tls/nats.key", strconv.Quote(certs.ServerKey))
	replace("/etc/chatbuf/tls/ca.crt", strconv.Quote(certs.CA))
	replace("store_dir: /data", "store_dir: "+strconv.Quote(t.TempDir()))
	replace("http: 0.0.0.0:8222", "")
	if mutual {
		replace("# verify: true", "verify: true")
	}

	n := &secureNATS{certs: certs, mutual: mutual, passwords: map[string]string{}}
	var env []string
	users := regexp.MustCompile(`user: ([\w-]+)\s+password: \$(\w+)`).FindAllStringSubmatch(conf, -1)
	if len(users) < 3 {
		t.Fatalf("deploy/nats-server.conf: found %d users with a password variable, want the worker and two devices", len(users))
	}
	for _, u := range users {
		pw := newSecret(t, "nats-"+u[1])
		n.passwords[u[1]] = pw
		env = append(env, u[2]+"="+pw)
	}
	if n.passwords["worker"] == "" {
		t.Fatal("deploy/nats-server.conf has no user worker")
	}
	n.srv = natstest.BinaryWith(t, natstest.Options{Config: conf, Env: env, Client: n.clientOptions("worker")})
	return n
}

// clientOptions are the options of a client logging in as user.
func (n *secureNATS) clientOptions(user string) []nats.Option {
	opts := []nats.Option{nats.UserInfo(user, n.passwords[user]), nats.RootCAs(n.certs.CA)}
	if n.mutual {
		opts = append(opts, nats.ClientCert(n.certs.ClientCert, n.certs.ClientKey))
	}
	return opts
}

// workerEnv is the worker's environment for logging in as `worker`.
func (n *secureNATS) workerEnv() []string {
	env := []string{"NATS_URL=" + n.srv.URL, "NATS_USER=worker", "NATS_PASSWORD=" + n.passwords["worker"],
		"NATS_TLS_CA_FILE=" + n.certs.CA}
	if n.mutual {
		env = append(env, "NATS_TLS_CERT_FILE="+n.certs.ClientCert, "NATS_TLS_KEY_FILE="+n.certs.ClientKey)
	}
	return env
}

// device connects as the device's NATS user (<user>-<device>), with its
// inbox prefix; asynchronous errors (permission violations) go to errs.
func (n *secureNATS) device(t *testing.T, user, device string, errs chan<- error) *nats.Conn {
	t.Helper()
	opts := append(n.clientOptions(user+"-"+device),
		nats.CustomInboxPrefix("_INBOX."+user+"."+device),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	nc, err := nats.Connect(n.srv.URL, opts...)
	if err != nil {
		t.Fatalf("connect as %s-%s: %v", user, device, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newSecureSystem is a system whose NATS is deploy/nats-server.conf and
// whose workers log in as `worker`.
func newSecureSystem(t *testing.T, n *secureNATS, r *redistest.Server, env ...string) *system {
	s := &system{t: t, redis: r, nats: n.srv}
	s.env = append(append([]string{
		"REDIS_HOST=127.0.0.1",
		"REDIS_PORT=" + strconv.Itoa(r.Port),
		"LOG_LEVEL=warn",
		"CHAT_FLUSH_MAX_AGE=2s",
		"CHAT_LOCK_TTL=2s",
		"CHAT_ACK_WAIT=5s",
	}, n.workerEnv()...), env...)
	t.Logf("nats-server %s with deploy/nats-server.conf, redis on %s", n.srv.Version, r.Addr)
	return s
}

// waitAsyncError waits for an asynchronous error containing want.
func waitAsyncError(t *testing.T, errs <-chan error, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var seen []string
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), want) {
				return
			}
			seen = append(seen, err.Error())
		case <-timeout:
			t.Fatalf("no asynchronous error %q within 5s; saw %q", want, seen)
		}
	}
}

// runProducer runs the producer binary with env added to this process's.
func runProducer(ctx context.Context, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin.producer, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// waitForMessage reads a stream until a message satisfies match.
func waitForMessage(t *testing.T, js jetstream.JetStream, streamName string, match func(jetstream.Msg) bool) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		for _, msg := range readStream(ctx, t, js, streamName) {
			if match(msg) {
				return msg
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no matching message in %s within 30s", streamName)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Per-device permissions from deploy/nats-server.conf: a device may publish
// only its own conversations, cannot read others' replies, its own
// messages go end to end, and ids in the body cannot override the subject.
func TestSecurityDevicePermissions(t *testing.T) {
	n := startSecureNATS(t, redistest.NewCerts(t), false)
	s := newSecureSystem(t, n, redistest.Start(t))
	w := s.startWorker()
	defer func() {
		if log := w.logText(); strings.Contains(log, "Permissions Violation") {
			t.Errorf("the worker user lacks a permission:\n%s", log)
		}
	}()
	workerJS, err := jetstream.New(n.srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	alice := n.device(t, "alice", "phone", errs)
	js, err := jetstream.New(alice)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("other subjects are refused", func(t *testing.T) {
		for _, subject := range []string{
			"opencontext.chat.in.bob.laptop.bot",     // another user
			"opencontext.chat.in.alice.laptop.bot",   // another device of the same user
			"opencontext.chat.flushed.alice.phone.x", // a forged batch
			"opencontext.chat.dead.invalid",          // a forged dead letter
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := js.Publish(ctx, subject, []byte(`{"role":"user","content":"intrusion"}`))
			cancel()
			if err == nil {
				t.Errorf("publish to %s: accepted", subject)
				continue
			}
			waitAsyncError(t, errs, `Permissions Violation for Publish to "`+subject+`"`)
		}
	})

	t.Run("others' replies cannot be read", func(t *testing.T) {
		for _, subject := range []string{"_INBOX.>", "_INBOX.bob.laptop.>", "opencontext.chat.flushed.>", "opencontext.chat.in.>"} {
			sub, err := alice.SubscribeSync(subject)
			if err != nil {
				t.Fatal(err)
			}
			waitAsyncError(t, errs, `Permissions Violation for Subscription to "`+subject+`"`)
			_ = sub.Unsubscribe()
		}
	})

	t.Run("own subject end to end", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		env := []string{"NATS_URL=" + n.srv.URL, "NATS_USER=alice-phone", "NATS_PASSWORD=" + n.passwords["alice-phone"],
			"NATS_INBOX_PREFIX=_INBOX.alice.phone"}
		stdout, stderr, err := runProducer(ctx, env, "", "--tls-ca", n.certs.CA,
			"send", "--user", "alice", "--device", "phone", "--agent", "bot", "--id", "sec-1", "hello")
		if err != nil {
			t.Fatalf("producer send as alice-phone: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		// The device may ask for a flush (the worker may not have buffered
		// the message yet: then the age sweep flushes it).
		reply, err := alice.Request("opencontext.chat.flush.alice.phone.bot", nil, 10*time.Second)
		if err != nil {
			t.Fatalf("flush request as alice-phone: %v", err)
		}
		var r struct {
			OK bool `json:"ok"`
		}
		if err := json.Unmarshal(reply.Data, &r); err != nil || !r.OK {
			t.Fatalf("flush reply %s: want ok", reply.Data)
		}
		waitForMessage(t, workerJS, "CHAT_FLUSHED", func(m jetstream.Msg) bool {
			var b chat.Batch
			if json.Unmarshal(m.Data(), &b) != nil || b.UserID != "alice" || b.DeviceID != "phone" || b.AgentID != "bot" {
				return false
			}
			return len(b.Messages) == 1 && b.Messages[0].MessageID == "sec-1"
		})
	})

	t.Run("ids in the body cannot override the subject", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		const subject = "opencontext.chat.in.alice.phone.bot"
		if _, err := js.Publish(ctx, subject, []byte(`{"role":"user","content":"I am bob","user_id":"bob","device_id":"laptop","message_id":"sec-spoof"}`)); err != nil {
			t.Fatalf("publish to own subject: %v", err)
		}
		dead := waitForMessage(t, workerJS, "CHAT_DEAD", func(m jetstream.Msg) bool {
			return bytes.Contains(m.Data(), []byte("sec-spoof"))
		})
		if dead.Subject() != "opencontext.chat.dead.id_mismatch" || dead.Headers().Get("Chatbuf-Reason") != "id_mismatch" ||
			dead.Headers().Get("Chatbuf-Subject") != subject {
			t.Errorf("dead letter on %s, reason %q, subject %q: want id_mismatch from %s",
				dead.Subject(), dead.Headers().Get("Chatbuf-Reason"), dead.Headers().Get("Chatbuf-Subject"), subject)
		}
	})
}

// startWorkerNoWait starts a worker process without waiting for it to be
// ready: for workers given wrong credentials.
func (s *system) startWorkerNoWait(extra ...string) *workerProc {
	s.t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		s.t.Fatal(err)
	}
	w := &workerProc{metrics: fmt.Sprintf("127.0.0.1:%d", port), log: &bytes.Buffer{}, done: make(chan error, 1)}
	w.cmd = exec.Command(bin.worker)
	w.cmd.Env = append(append(os.Environ(), s.env...), append([]string{"METRICS_ADDR=" + w.metrics}, extra...)...)
	w.cmd.Stderr = &syncWriter{w: w.log}
	if err := w.cmd.Start(); err != nil {
		s.t.Fatalf("start worker: %v", err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	s.t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if s.t.Failed() {
			s.t.Logf("worker %d log:\n%s", w.cmd.Process.Pid, w.logText())
		}
	})
	return w
}

// waitLog waits until the worker has logged want, or has exited.
func waitLog(t *testing.T, w *workerProc, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(w.logText(), want) {
		if _, exited := w.exited(); exited || time.Now().After(deadline) {
			t.Fatalf("worker did not log %q; log:\n%s", want, w.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getMetrics returns a worker's /metrics text ("" when it does not answer).
func getMetrics(t *testing.T, w *workerProc) string {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + w.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Passwords given to workers and producers, right or wrong, appear in no
// log line (at debug level), no /metrics output and no error message.
func TestSecretsNeverLogged(t *testing.T) {
	n := startSecureNATS(t, redistest.NewCerts(t), false)
	redisPassword := newSecret(t, "redis")
	s := newSecureSystem(t, n, redistest.StartWith(t, redistest.Options{Password: redisPassword}),
		"REDIS_PASSWORD="+redisPassword, "LOG_LEVEL=debug", "CHAT_BUFFER_SIZE=2")
	wrongRedis, wrongNATS, wrongDevice := newSecret(t, "wrong-redis"), newSecret(t, "wrong-nats"), newSecret(t, "wrong-device")
	secrets := []string{redisPassword, wrongRedis, wrongNATS, wrongDevice}
	for _, pw := range n.passwords {
		secrets = append(secrets, pw)
	}

	var texts []string // everything a secret must not appear in
	// Credentials in variables, and in the URL.
	w1 := s.startWorker()
	urlWithPassword := strings.Replace(n.srv.URL, "nats://", "nats://worker:"+n.passwords["worker"]+"@", 1)
	w2 := s.startWorker("NATS_USER=", "NATS_PASSWORD=", "NATS_URL="+urlWithPassword)

	// Traffic: messages from a device, batches, a manual flush.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	device := []string{"NATS_URL=" + n.srv.URL, "NATS_USER=alice-phone", "NATS_PASSWORD=" + n.passwords["alice-phone"],
		"NATS_INBOX_PREFIX=_INBOX.alice.phone", "NATS_TLS_CA_FILE=" + n.certs.CA}
	var lines strings.Builder
	for i := range 5 {
		fmt.Fprintf(&lines, `{"role":"user","content":"secret test %d","message_id":"st-%d"}`+"\n", i, i)
	}
	stdout, stderr, err := runProducer(ctx, device, lines.String(), "send", "--user", "alice", "--device", "phone", "--agent", "bot")
	if err != nil {
		t.Fatalf("producer send: %v\n%s%s", err, stdout, stderr)
	}
	texts = append(texts, stdout, stderr)
	alice := n.device(t, "alice", "phone", make(chan error, 1))
	if reply, err := alice.Request("opencontext.chat.flush.alice.phone.bot", nil, 10*time.Second); err != nil || !bytes.Contains(reply.Data, []byte(`"ok":true`)) {
		t.Fatalf("flush request: %v", err)
	}
	workerJS, err := jetstream.New(n.srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	waitForMessage(t, workerJS, "CHAT_FLUSHED", func(m jetstream.Msg) bool { return bytes.Contains(m.Data(), []byte(`"st-4"`)) })

	// Wrong passwords: the error paths log, and must not show them either.
	w3 := s.startWorkerNoWait("REDIS_PASSWORD=" + wrongRedis)
	waitLog(t, w3, "WRONGPASS")
	w4 := s.startWorkerNoWait("NATS_PASSWORD=" + wrongNATS)
	waitLog(t, w4, "Authorization Violation")
	wrongURL := strings.Replace(n.srv.URL, "nats://", "nats://alice-phone:"+wrongDevice+"@", 1)
	stdout, stderr, err = runProducer(ctx, nil, "", "--nats", wrongURL, "--tls-ca", n.certs.CA,
		"send", "--user", "alice", "--device", "phone", "--agent", "bot", "hi")
	if err == nil || !strings.Contains(stderr, "cannot connect to NATS at nats://alice-phone:xxxxx@") {
		t.Errorf("producer with a wrong password in the URL: %v, stderr %q: want a failure naming the redacted URL", err, stderr)
	}
	texts = append(texts, stdout, stderr)
	// A configuration error about a password.
	cmd := exec.Command(bin.worker)
	cmd.Env = append(os.Environ(), "NATS_PASSWORD="+wrongNATS, "NATS_URL="+wrongURL)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "NATS_PASSWORD=(hidden)") {
		t.Errorf("worker with NATS_PASSWORD and credentials in NATS_URL: %v, output %q: want exit 2 naming NATS_PASSWORD=(hidden)", err, out)
	}
	texts = append(texts, string(out))

	for _, w := range []*workerProc{w1, w2, w3, w4} {
		texts = append(texts, getMetrics(t, w))
	}
	for _, w := range []*workerProc{w1, w2} {
		if err := w.stop(15 * time.Second); err != nil {
			t.Errorf("worker on SIGTERM: %v", err)
		}
	}
	for _, w := range []*workerProc{w1, w2, w3, w4} {
		texts = append(texts, w.logText())
	}

	all := strings.Join(texts, "\n")
	for _, want := range []string{`"level":"DEBUG"`, "flush: batch published", "nats: connected", "worker:xxxxx@", "chatbuf_batches_total"} {
		if !strings.Contains(all, want) {
			t.Errorf("logs and metrics lack %q: the test saw less than it should", want)
		}
	}
	for _, secret := range secrets {
		for i, text := range texts {
			if strings.Contains(text, secret) {
				t.Errorf("text %d shows a secret (%.12s...):\n%s", i, secret, text)
			}
		}
	}
}

// TLS everywhere: Redis speaks TLS only and wants a client certificate and
// the ACL user of deploy/gen-secrets.sh; NATS wants a client certificate.
// Two workers and a verifying load get every message into exactly one
// batch; the completion service works under the ACL rules.
func TestSecurityTLSEndToEnd(t *testing.T) {
	certs := redistest.NewCerts(t)
	script, err := os.ReadFile("../deploy/gen-secrets.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CHATBUF_REDIS_ACL='([^']*)'`).FindSubmatch(script)
	if m == nil {
		t.Fatal("deploy/gen-secrets.sh has no CHATBUF_REDIS_ACL='...' line")
	}
	aclPassword := newSecret(t, "redis-acl")
	r := redistest.StartWith(t, redistest.Options{
		Password: newSecret(t, "redis-default"),
		Username: "chatbuf", UserPassword: aclPassword, UserRules: string(m[1]),
		TLS: &redistest.TLS{Certs: certs, RequireClientCert: true},
	})
	natsConf := fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n  timeout: 2\n}\n",
		certs.ServerCert, certs.ServerKey, certs.CA)
	clientTLS := []nats.Option{nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey)}
	ns := natstest.BinaryWith(t, natstest.Options{Config: natsConf, Client: clientTLS})
	s := &system{t: t, redis: r, nats: ns, env: []string{
		"REDIS_HOST=127.0.0.1",
		"REDIS_PORT=" + strconv.Itoa(r.Port),
		"REDIS_USERNAME=chatbuf",
		"REDIS_PASSWORD=" + aclPassword,
		"REDIS_TLS=true",
		"REDIS_TLS_CA_FILE=" + certs.CA,
		"REDIS_TLS_CERT_FILE=" + certs.ClientCert,
		"REDIS_TLS_KEY_FILE=" + certs.ClientKey,
		"REDIS_FALLBACK=false", // an ACL refusal must show, not be buffered away
		"NATS_URL=" + ns.URL,
		"NATS_TLS_CA_FILE=" + certs.CA,
		"NATS_TLS_CERT_FILE=" + certs.ClientCert,
		"NATS_TLS_KEY_FILE=" + certs.ClientKey,
		"LOG_LEVEL=info",
		"CHAT_FLUSH_MAX_AGE=2s",
		"CHAT_LOCK_TTL=2s",
		"CHAT_ACK_WAIT=5s",
	}}
	t.Logf("nats-server %s with mutual TLS, redis on %s with TLS and an ACL user", ns.Version, r.Addr)

	// Neither server talks to a client without TLS or without a certificate.
	plain := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "chatbuf", Password: aclPassword, MaxRetries: -1, DialTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(context.Background()).Err(); err == nil {
		t.Error("redis answers a client without TLS")
	}
	if nc, err := nats.Connect(ns.URL, nats.RootCAs(certs.CA), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Error("nats-server accepts a client without a certificate")
	}

	ws := []*workerProc{s.startWorker(), s.startWorker()}
	if log := ws[0].logText(); !strings.Contains(log, `"tls":true`) || !strings.Contains(log, `"mode":"single"`) {
		t.Errorf("worker log does not say Redis is on TLS:\n%s", log)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.producer, "--nats", ns.URL,
		"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey,
		"load", "--conversations", "50", "--messages", "2000", "--verify", "--json", "--verify-timeout", "2m")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var res loadResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil || res.Report == nil {
		t.Fatalf("producer load over TLS: %v; output not understood (%v):\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	requireExactlyOnce(t, res.Report, 2000)
	t.Logf("over TLS: %d batches %v, latency %s", res.Report.Batches, res.Report.BatchesByReason, res.Report.Latency)

	nc := ns.Conn(t)
	put, err := nc.Request("completion.put", []byte(`{"user":"alice","key":"k","context_hash":"h","confidence":0.5,"suggestions":[{"text":"t","score":1}]}`), 5*time.Second)
	if err != nil || string(put.Data) != `{"ok":true}` {
		t.Fatalf("completion.put under the ACL rules: %v %s", err, dataOf(put))
	}
	get, err := nc.Request("completion.get", []byte(`{"user":"alice","key":"k","context_hash":"h"}`), 5*time.Second)
	if err != nil || !bytes.Contains(get.Data, []byte(`"hit":true`)) {
		t.Fatalf("completion.get under the ACL rules: %v %s", err, dataOf(get))
	}
	stopAll(t, ws)
}

func dataOf(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}
