package main

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.RedisHost != "localhost" || cfg.RedisPort != 6379 || cfg.BufferSize != 10 ||
		cfg.BufferTTL.D() != 24*time.Hour || cfg.FlushMaxAge.D() != 5*time.Minute ||
		cfg.MetricsAddr != ":9464" || !cfg.RedisEnabled || cfg.NATSURL != "nats://127.0.0.1:4222" {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig(map[string]string{"METRICS_ADDR": "", "CHAT_BUFFER_TTL": "86400", "CHAT_FLUSH_MAX_AGE": "90s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsAddr != "" || cfg.BufferTTL.D() != 24*time.Hour || cfg.FlushMaxAge.D() != 90*time.Second {
		t.Errorf("METRICS_ADDR empty, plain seconds, Go duration: got %q, %v, %v", cfg.MetricsAddr, cfg.BufferTTL.D(), cfg.FlushMaxAge.D())
	}
}

func TestConfigErrorsNameVariableAndValue(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"zero buffer size", map[string]string{"CHAT_BUFFER_SIZE": "0"}, `CHAT_BUFFER_SIZE="0"`},
		{"port not a number", map[string]string{"REDIS_PORT": "abc"}, `REDIS_PORT="abc": not an integer`},
		{"port out of range", map[string]string{"REDIS_PORT": "70000"}, `REDIS_PORT="70000"`},
		{"negative ttl", map[string]string{"CHAT_BUFFER_TTL": "-1"}, `CHAT_BUFFER_TTL="-1": must be a positive duration`},
		{"bad duration", map[string]string{"CHAT_FLUSH_MAX_AGE": "soon"}, `CHAT_FLUSH_MAX_AGE="soon": not a duration`},
		{"bad bool", map[string]string{"REDIS_ENABLED": "maybe"}, `REDIS_ENABLED="maybe": not a boolean`},
		{"ttl shorter than max age", map[string]string{"CHAT_BUFFER_TTL": "1m"}, `CHAT_BUFFER_TTL="1m": must be at least 2 x (CHAT_FLUSH_MAX_AGE + CHAT_ACK_WAIT)`},
		{"ttl not well above max age", map[string]string{"CHAT_BUFFER_TTL": "10m", "CHAT_FLUSH_MAX_AGE": "5m", "CHAT_ACK_WAIT": "30s"}, `CHAT_BUFFER_TTL="10m": must be at least 2 x (CHAT_FLUSH_MAX_AGE + CHAT_ACK_WAIT) = 2 x (5m0s + 30s) = 11m0s`},
		{"reject after under a minute", map[string]string{"CHAT_BATCH_REJECT_AFTER": "30s"}, `CHAT_BATCH_REJECT_AFTER="30s": must be at least 1m`},
		{"negative batch bytes", map[string]string{"CHAT_BATCH_MAX_BYTES": "-1"}, `CHAT_BATCH_MAX_BYTES="-1"`},
		{"message cannot fit the batch ceiling", map[string]string{"CHAT_BATCH_MAX_BYTES": "100000", "CHAT_MAX_MESSAGE_BYTES": "65536"}, `CHAT_BATCH_MAX_BYTES="100000": one message of CHAT_MAX_MESSAGE_BYTES=65536`},
		{"short duplicate window", map[string]string{"CHAT_DUPLICATE_WINDOW": "30s"}, `CHAT_DUPLICATE_WINDOW="30s": must be at least 2m`},
		{"wildcard prefix", map[string]string{"CHAT_SUBJECT_PREFIX": "a.*"}, `CHAT_SUBJECT_PREFIX="a.*"`},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, `LOG_LEVEL="loud"`},
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
		})
	}
}

// envVars returns each config variable with its envDefault.
func envVars() map[string]string {
	out := map[string]string{}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		if name := f.Tag.Get("env"); name != "" {
			out[name] = f.Tag.Get("envDefault")
		}
	}
	out["METRICS_ADDR"] = defaultMetricsAddr
	return out
}

func TestReadmeConfigTableMatchesConfig(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([A-Z_]+)` \\| ([^|]*) \\|")
	documented := map[string]string{}
	inSection := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") { // subsections (the gateway's) end the worker's table
			inSection = line == "## Configuration"
			continue
		}
		if m := row.FindStringSubmatch(line); inSection && m != nil {
			def := strings.Trim(strings.TrimSpace(m[2]), "`")
			if def == "(empty)" {
				def = ""
			}
			documented[m[1]] = def
		}
	}
	want := envVars()
	for name, def := range want {
		got, ok := documented[name]
		if !ok {
			t.Errorf("%s is not in the README's configuration table", name)
		} else if got != def {
			t.Errorf("%s: README default %q, code default %q", name, got, def)
		}
	}
	for name := range documented {
		if _, ok := want[name]; !ok {
			t.Errorf("README documents %s, which the worker does not read", name)
		}
	}
}

func TestComposeSetsOnlyRealVariables(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	producerVars := map[string]bool{"NATS_URL": true, "CHAT_SUBJECT_PREFIX": true,
		"NATS_USER": true, "NATS_PASSWORD": true, "NATS_TOKEN": true, "NATS_NKEY_SEED_FILE": true, "NATS_CREDS": true,
		"NATS_TLS_CA_FILE": true, "NATS_TLS_CERT_FILE": true, "NATS_TLS_KEY_FILE": true, "NATS_INBOX_PREFIX": true}
	known := envVars()
	service := ""
	inEnv := false
	checked := 0
	for line := range strings.SplitSeq(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case indent == 2 && strings.HasSuffix(trimmed, ":"):
			service, inEnv = strings.TrimSuffix(trimmed, ":"), false
		case indent == 4:
			inEnv = trimmed == "environment:"
		case inEnv && indent == 6 && strings.Contains(trimmed, ":"):
			name := strings.TrimSpace(strings.SplitN(trimmed, ":", 2)[0])
			checked++
			switch service {
			case "worker", "worker-secure":
				if _, ok := known[name]; !ok {
					t.Errorf("docker-compose.yml sets %s for the worker, which it does not read", name)
				}
			case "producer", "producer-secure":
				if !producerVars[name] {
					t.Errorf("docker-compose.yml sets %s for the producer, which it does not read", name)
				}
			}
		}
	}
	if checked < 5 {
		t.Errorf("found only %d environment entries in docker-compose.yml: parser out of date?", checked)
	}
}

// The batch ceiling against a server's max_payload: what cannot fit is
// refused, naming the variables, their values and the limit.
func TestBatchCeilingAgainstMaxPayload(t *testing.T) {
	const mib = 1 << 20
	base, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := batchCeiling(base, mib); err != nil || got != mib-4096 {
		t.Errorf("default on a 1 MiB server = %d, %v; want %d", got, err, mib-4096)
	}
	set := base
	set.BatchMaxBytes = 900_000
	if got, err := batchCeiling(set, mib); err != nil || got != 900_000 {
		t.Errorf("CHAT_BATCH_MAX_BYTES=900000 on a 1 MiB server = %d, %v", got, err)
	}
	tests := []struct {
		name       string
		batch, msg int
		maxPayload int64
		want       []string
	}{
		{"ceiling leaves no room for headers", mib - 100, 65536, mib,
			[]string{"CHAT_BATCH_MAX_BYTES=1048476", "max_payload 1048576", "at most 1044480"}},
		{"a message cannot fit the default ceiling", 0, 65536, 64 * 1024,
			[]string{"CHAT_MAX_MESSAGE_BYTES=65536", "CHAT_BATCH_MAX_BYTES (unset: max_payload 65536 - 4096 = 61440)"}},
		{"a message cannot fit the set ceiling", 200_000, 65536, mib,
			[]string{"CHAT_MAX_MESSAGE_BYTES=65536", "CHAT_BATCH_MAX_BYTES=200000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.BatchMaxBytes, c.MaxMessageBytes = tc.batch, tc.msg
			_, err := batchCeiling(c, tc.maxPayload)
			if err == nil {
				t.Fatalf("accepted CHAT_BATCH_MAX_BYTES=%d, CHAT_MAX_MESSAGE_BYTES=%d on max_payload %d", tc.batch, tc.msg, tc.maxPayload)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
