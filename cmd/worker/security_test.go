package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/redistest"
)

// Secret values used across these tests: no error or log may show them.
const (
	secretPassword = "s3cret-Passw0rd"
	secretToken    = "t0ken-V4lue"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigSecurityErrors(t *testing.T) {
	certs := redistest.NewCerts(t)
	garbage := writeFile(t, "garbage", "not a key\n")
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"missing creds file", map[string]string{"NATS_CREDS": "/x"}, `NATS_CREDS="/x": no such file`},
		{"creds file without jwt", map[string]string{"NATS_CREDS": garbage}, `NATS_CREDS="` + garbage + `": no user JWT`},
		{"missing seed file", map[string]string{"NATS_NKEY_SEED_FILE": "/x/seed.nk"}, `NATS_NKEY_SEED_FILE="/x/seed.nk": no such file`},
		{"seed file without seed", map[string]string{"NATS_NKEY_SEED_FILE": garbage}, `NATS_NKEY_SEED_FILE="` + garbage + `": no nkey seed`},
		{"password without user", map[string]string{"NATS_PASSWORD": secretPassword}, `NATS_PASSWORD=(hidden): needs NATS_USER`},
		{"user without password", map[string]string{"NATS_USER": "worker"}, `NATS_USER="worker": needs NATS_PASSWORD`},
		{"user and token", map[string]string{"NATS_USER": "worker", "NATS_PASSWORD": secretPassword, "NATS_TOKEN": secretToken},
			`NATS_TOKEN=(hidden): set together with NATS_USER: choose one way to authenticate`},
		{"credentials in the URL and a user", map[string]string{"NATS_URL": "nats://worker:" + secretPassword + "@nats:4222", "NATS_USER": "w", "NATS_PASSWORD": "p"},
			`NATS_URL="nats://worker:xxxxx@nats:4222": set together with NATS_USER`},
		{"token in the URL and a token", map[string]string{"NATS_URL": "nats://" + secretToken + "@nats:4222", "NATS_TOKEN": secretToken},
			`NATS_URL="nats://xxxxx@nats:4222": set together with NATS_TOKEN`},
		{"embedded with credentials", map[string]string{"NATS_URL": "embedded", "NATS_TOKEN": secretToken},
			`NATS_TOKEN=(hidden): not used with NATS_URL=embedded`},
		{"missing nats CA", map[string]string{"NATS_TLS_CA_FILE": "/x/ca.crt"}, `NATS_TLS_CA_FILE="/x/ca.crt": no such file`},
		{"nats CA not PEM", map[string]string{"NATS_TLS_CA_FILE": garbage}, `NATS_TLS_CA_FILE="` + garbage + `": no PEM certificate`},
		{"nats cert without key", map[string]string{"NATS_TLS_CERT_FILE": certs.ClientCert},
			`NATS_TLS_CERT_FILE="` + certs.ClientCert + `": needs NATS_TLS_KEY_FILE`},
		{"redis TLS files without REDIS_TLS", map[string]string{"REDIS_TLS_CA_FILE": certs.CA}, `REDIS_TLS_CA_FILE="` + certs.CA + `": needs REDIS_TLS=true`},
		{"bad REDIS_TLS", map[string]string{"REDIS_TLS": "yes please"}, `REDIS_TLS="yes please": not a boolean`},
		{"missing redis CA", map[string]string{"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": "/x/ca.crt"}, `REDIS_TLS_CA_FILE="/x/ca.crt": no such file`},
		{"redis key of another certificate", map[string]string{"REDIS_TLS": "true", "REDIS_TLS_CERT_FILE": certs.ClientCert, "REDIS_TLS_KEY_FILE": certs.ServerKey},
			`REDIS_TLS_CERT_FILE="` + certs.ClientCert + `", REDIS_TLS_KEY_FILE="` + certs.ServerKey + `": tls: private key does not match public key`},
		{"redis key without cert", map[string]string{"REDIS_TLS": "true", "REDIS_TLS_KEY_FILE": certs.ClientKey},
			`REDIS_TLS_KEY_FILE="` + certs.ClientKey + `": needs REDIS_TLS_CERT_FILE`},
		{"REDIS_ADDRS not host:port", map[string]string{"REDIS_ADDRS": "a:6379,b"}, `REDIS_ADDRS="a:6379,b": "b" is not host:port`},
		{"REDIS_ADDRS bad port", map[string]string{"REDIS_ADDRS": "a:0"}, `REDIS_ADDRS="a:0": "a:0": port must be 1-65535`},
		{"REDIS_ADDRS and REDIS_HOST", map[string]string{"REDIS_ADDRS": "a:6379", "REDIS_HOST": "b"}, `REDIS_HOST="b": not used with REDIS_ADDRS`},
		{"REDIS_ADDRS and a database", map[string]string{"REDIS_ADDRS": "a:6379", "REDIS_DB": "2"}, `REDIS_DB="2": must be 0 with REDIS_ADDRS`},
		{"bad port with a password set", map[string]string{"REDIS_PASSWORD": secretPassword, "REDIS_PORT": "0"}, `REDIS_PORT="0"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.env)
			if err == nil {
				t.Fatalf("loadConfig(%v) accepted", tc.env)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			for _, secret := range []string{secretPassword, secretToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

func TestConfigSecurityAccepted(t *testing.T) {
	certs := redistest.NewCerts(t)
	seed := writeFile(t, "user.nk", string(newUserSeed(t)))
	for _, env := range []map[string]string{
		{"NATS_USER": "worker", "NATS_PASSWORD": secretPassword},
		{"NATS_TOKEN": secretToken},
		{"NATS_NKEY_SEED_FILE": seed},
		{"NATS_URL": "nats://worker:" + secretPassword + "@a:4222,nats://worker:" + secretPassword + "@b:4222"},
		{"NATS_TLS_CA_FILE": certs.CA, "NATS_TLS_CERT_FILE": certs.ClientCert, "NATS_TLS_KEY_FILE": certs.ClientKey},
		{"REDIS_TLS": "true"},
		{"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": certs.CA, "REDIS_TLS_CERT_FILE": certs.ClientCert,
			"REDIS_TLS_KEY_FILE": certs.ClientKey, "REDIS_TLS_SERVER_NAME": "redis.internal"},
		{"REDIS_ADDRS": "10.0.0.1:6379, 10.0.0.2:6379,[::1]:7000", "REDIS_USERNAME": "chatbuf", "REDIS_PASSWORD": secretPassword},
	} {
		if _, err := loadConfig(env); err != nil {
			t.Errorf("loadConfig(%v): %v", env, err)
		}
	}
}

func TestSecretsRedactedFromURLs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"embedded", "embedded"},
		{"nats://worker:pw@nats:4222", "nats://worker:xxxxx@nats:4222"},
		{"tls://tok@nats:4222", "tls://xxxxx@nats:4222"},
		{"nats://a:1,nats://u:p@b:2", "nats://a:1,nats://u:xxxxx@b:2"},
		{"u:p@host:4222", "xxxxx@host:4222"},
		{"nats://u:p%zz@host:4222", "nats://xxxxx@host:4222"}, // not a valid URL: still hidden
	}
	for _, tc := range tests {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got, want := urlHasCredentials(tc.in), tc.in != tc.want; got != want {
			t.Errorf("urlHasCredentials(%q) = %v, want %v", tc.in, got, want)
		}
	}
}

func TestConfigRedisClientMode(t *testing.T) {
	certs := redistest.NewCerts(t)
	cfg, err := loadConfig(map[string]string{"REDIS_HOST": "redis", "REDIS_PORT": "6380", "REDIS_USERNAME": "chatbuf",
		"REDIS_PASSWORD": secretPassword, "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": certs.CA, "REDIS_TLS_SERVER_NAME": "redis.internal"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := newRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	single, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("newRedis without REDIS_ADDRS = %T, want *redis.Client", c)
	}
	o := single.Options()
	if o.Addr != "redis:6380" || o.Username != "chatbuf" || o.Password != secretPassword || o.TLSConfig == nil ||
		o.TLSConfig.RootCAs == nil || o.TLSConfig.ServerName != "redis.internal" || o.TLSConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("single options: addr %q, user %q, TLS %+v", o.Addr, o.Username, o.TLSConfig)
	}

	cfg, err = loadConfig(map[string]string{"REDIS_ADDRS": "r1:7000, r2:7001", "REDIS_PASSWORD": secretPassword})
	if err != nil {
		t.Fatal(err)
	}
	c, err = newRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cluster, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("newRedis with REDIS_ADDRS = %T, want *redis.ClusterClient", c)
	}
	co := cluster.Options()
	if strings.Join(co.Addrs, ",") != "r1:7000,r2:7001" || co.Password != secretPassword || co.TLSConfig != nil {
		t.Errorf("cluster options: addrs %q, TLS %v", co.Addrs, co.TLSConfig)
	}
}

// The cluster client talks to a real (one-node) Redis Cluster.
func TestConfigRedisClusterClient(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Password: secretPassword, Args: []string{
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf")}})
	admin := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for {
		info, err := admin.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not ok: %v %q", err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg, err := loadConfig(map[string]string{"REDIS_ADDRS": srv.Addr, "REDIS_PASSWORD": secretPassword})
	if err != nil {
		t.Fatal(err)
	}
	c, err := newRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, key := range []string{"opencontext:a", "opencontext:b", "opencontext:{u:d:a}"} {
		if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
			t.Fatalf("SET %s through the cluster client: %v", key, err)
		}
		if got, err := c.Get(ctx, key).Result(); err != nil || got != "v" {
			t.Fatalf("GET %s = %q, %v", key, got, err)
		}
	}
}

// newUserSeed returns a new NKey user seed.
func newUserSeed(t *testing.T) []byte {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

// lockedLog is a slog handler's output.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Every way to authenticate connects to a server that requires it, through
// connectNATS, and the log shows no secret.
func TestSecurityNATSAuthentication(t *testing.T) {
	certs := redistest.NewCerts(t)

	// NKey user.
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	seedFile := writeFile(t, "user.nk", string(useed))

	// Operator mode, for the .creds file.
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ckp, _ := nkeys.CreateUser()
	cpub, _ := ckp.PublicKey()
	cseed, _ := ckp.Seed()
	cjwt, err := jwt.NewUserClaims(cpub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(cjwt, cseed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := writeFile(t, "user.creds", string(creds))

	serverTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CaFile: certs.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		server func(*server.Options)
		env    func(url string) map[string]string
	}{
		{"user and password", func(o *server.Options) {
			o.Users = []*server.User{{Username: "worker", Password: secretPassword}}
		}, func(url string) map[string]string {
			return map[string]string{"NATS_URL": url, "NATS_USER": "worker", "NATS_PASSWORD": secretPassword}
		}},
		{"user and password in the URL", func(o *server.Options) {
			o.Users = []*server.User{{Username: "worker", Password: secretPassword}}
		}, func(url string) map[string]string {
			return map[string]string{"NATS_URL": strings.Replace(url, "nats://", "nats://worker:"+secretPassword+"@", 1)}
		}},
		{"token", func(o *server.Options) { o.Authorization = secretToken }, func(url string) map[string]string {
			return map[string]string{"NATS_URL": url, "NATS_TOKEN": secretToken}
		}},
		{"token in the URL", func(o *server.Options) { o.Authorization = secretToken }, func(url string) map[string]string {
			return map[string]string{"NATS_URL": strings.Replace(url, "nats://", "nats://"+secretToken+"@", 1)}
		}},
		{"nkey seed file", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: upub}} }, func(url string) map[string]string {
			return map[string]string{"NATS_URL": url, "NATS_NKEY_SEED_FILE": seedFile}
		}},
		{"creds file", func(o *server.Options) {
			o.TrustedOperators = []*jwt.OperatorClaims{operator}
			r := &server.MemAccResolver{}
			if err := r.Store(apub, ajwt); err != nil {
				t.Fatal(err)
			}
			o.AccountResolver = r
		}, func(url string) map[string]string {
			return map[string]string{"NATS_URL": url, "NATS_CREDS": credsFile}
		}},
		{"mutual TLS", func(o *server.Options) {
			o.TLSConfig, o.TLSVerify, o.TLSTimeout = serverTLS, true, 2
		}, func(url string) map[string]string {
			return map[string]string{"NATS_URL": url, "NATS_TLS_CA_FILE": certs.CA,
				"NATS_TLS_CERT_FILE": certs.ClientCert, "NATS_TLS_KEY_FILE": certs.ClientKey}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := natsserver.DefaultTestOptions
			opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
			tc.server(&opts)
			srv := natsserver.RunServer(&opts)
			defer srv.Shutdown()
			url := fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)

			// Without the credentials the server refuses.
			if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
				nc.Close()
				t.Fatal("server accepts a client without credentials")
			}

			cfg, err := loadConfig(tc.env(url))
			if err != nil {
				t.Fatal(err)
			}
			natsOpts, err := cfg.natsSecurity()
			if err != nil {
				t.Fatal(err)
			}
			out := &lockedLog{}
			log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
			nc, err := connectNATS(cfg.NATSURL, natsOpts, log, func(error) {}, func(*nats.Conn) {})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			deadline := time.Now().Add(5 * time.Second)
			for !nc.IsConnected() || !strings.Contains(out.String(), "nats: connected") {
				if time.Now().After(deadline) {
					t.Fatalf("not connected after 5s; log:\n%s", out)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := nc.Publish("x", nil); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			for _, secret := range []string{secretPassword, secretToken, string(useed), string(cseed)} {
				if strings.Contains(text, secret) {
					t.Errorf("log shows a secret:\n%s", text)
				}
			}
		})
	}
}
