package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
)

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var out []rule
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("alerts.yml: group %q without name or rules", g.Name)
		}
		out = append(out, g.Rules...)
	}
	return out
}

// The rules file has the shape Prometheus loads: named groups of alerts,
// each with an expression that balances, a valid duration, a severity and
// a summary.
func TestAlertRulesWellFormed(t *testing.T) {
	rules := readRules(t)
	if len(rules) < 6 {
		t.Fatalf("alerts.yml has %d rules, want the 6 kinds at least", len(rules))
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" || seen[r.Alert] {
			t.Errorf("alert name %q empty or repeated", r.Alert)
		}
		seen[r.Alert] = true
		if err := balanced(r.Expr); err != nil {
			t.Errorf("%s: expr %q: %v", r.Alert, r.Expr, err)
		}
		if r.For != "" {
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("%s: needs labels.severity and annotations.summary", r.Alert)
		}
	}
	for _, want := range []string{"ChatbufWorkerNotReady", "ChatbufBufferOlderThanMaxAge", "ChatbufInflightStuck",
		"ChatbufDeadLetters", "ChatbufBacklogGrowing", "ChatbufFallbackActive"} {
		if !seen[want] {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
}

// balanced checks brackets, braces, parentheses and quotes.
func balanced(expr string) error {
	if strings.TrimSpace(expr) == "" {
		return errors.New("empty")
	}
	var stack []rune
	inQuote := false
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q", r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return errors.New("unclosed quote or bracket")
	}
	return nil
}

type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/dashboards/chatbuf.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("chatbuf.json: %v", err)
	}
	return d
}

// The dashboard has a panel for each subject an operator needs, with
// queries that balance.
func TestDashboardWellFormed(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q, title %q, %d panels", d.UID, d.Title, len(d.Panels))
	}
	ids := map[int]bool{}
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: repeated id or no query", p.ID, p.Title)
		}
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		for _, q := range p.Targets {
			if err := balanced(q.Expr); err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, q.Expr, err)
			}
		}
	}
	all := strings.Join(titles, "\n")
	for _, want := range []string{"throughput", "batches by reason", "flush duration", "backlog", "oldest", "dead letters",
		"store mode", "redis round trips", "errors", "per worker", "latency publish-to-batch"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel about %q", want)
		}
	}
}

type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type deploymentSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			Containers []struct {
				Name           string `yaml:"name"`
				Image          string `yaml:"image"`
				LivenessProbe  *probe `yaml:"livenessProbe"`
				ReadinessProbe *probe `yaml:"readinessProbe"`
			} `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type pdbSpec struct {
	MinAvailable any `yaml:"minAvailable"`
	Selector     struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
}

type scaledObjectSpec struct {
	ScaleTargetRef struct {
		Name string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	Triggers []struct {
		Type     string            `yaml:"type"`
		Metadata map[string]string `yaml:"metadata"`
	} `yaml:"triggers"`
}

func readManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no k8s/*.yaml (%v)", err)
	}
	var out []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var m manifest
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
			}
			out = append(out, m)
		}
	}
	return out
}

// The Kubernetes manifests parse and hang together: Deployments whose
// selectors match their pods and whose containers have probes, a
// PodDisruptionBudget for each, and a ScaledObject on the worker
// Deployment with a JetStream and a Prometheus trigger.
func TestKubernetesManifests(t *testing.T) {
	deployments := map[string]deploymentSpec{}
	var pdbs []pdbSpec
	var scaled []scaledObjectSpec
	for _, m := range readManifests(t) {
		switch m.Kind {
		case "Deployment":
			var s deploymentSpec
			if err := m.Spec.Decode(&s); err != nil {
				t.Fatalf("Deployment %s: %v", m.Metadata.Name, err)
			}
			if len(s.Selector.MatchLabels) == 0 {
				t.Errorf("Deployment %s: no selector", m.Metadata.Name)
			}
			for k, v := range s.Selector.MatchLabels {
				if s.Template.Metadata.Labels[k] != v {
					t.Errorf("Deployment %s: selector %s=%s does not match the pod labels", m.Metadata.Name, k, v)
				}
			}
			if len(s.Template.Spec.Containers) == 0 {
				t.Errorf("Deployment %s: no containers", m.Metadata.Name)
			}
			for _, c := range s.Template.Spec.Containers {
				if c.Image == "" || c.LivenessProbe == nil || c.ReadinessProbe == nil ||
					c.LivenessProbe.HTTPGet.Path == "" || c.ReadinessProbe.HTTPGet.Path == "" {
					t.Errorf("Deployment %s container %s: needs an image and HTTP liveness and readiness probes", m.Metadata.Name, c.Name)
				}
			}
			deployments[m.Metadata.Name] = s
		case "PodDisruptionBudget":
			var s pdbSpec
			if err := m.Spec.Decode(&s); err != nil {
				t.Fatal(err)
			}
			pdbs = append(pdbs, s)
		case "ScaledObject":
			var s scaledObjectSpec
			if err := m.Spec.Decode(&s); err != nil {
				t.Fatal(err)
			}
			scaled = append(scaled, s)
		}
	}
	w, ok := deployments["chatbuf-worker"]
	if !ok || deployments["chatbuf-gateway"].Template.Spec.Containers == nil {
		t.Fatalf("want Deployments chatbuf-worker and chatbuf-gateway, have %v", slices.Collect(func(yield func(string) bool) {
			for k := range deployments {
				if !yield(k) {
					return
				}
			}
		}))
	}
	if c := w.Template.Spec.Containers[0]; c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("worker probes: liveness %q, readiness %q; want /healthz and /readyz", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	for name, d := range deployments {
		covered := false
		for _, p := range pdbs {
			match := len(p.Selector.MatchLabels) > 0 && p.MinAvailable != nil
			for k, v := range p.Selector.MatchLabels {
				match = match && d.Template.Metadata.Labels[k] == v
			}
			covered = covered || match
		}
		if !covered {
			t.Errorf("Deployment %s has no PodDisruptionBudget", name)
		}
	}
	if len(scaled) != 1 || scaled[0].ScaleTargetRef.Name != "chatbuf-worker" {
		t.Fatalf("want one ScaledObject on chatbuf-worker, have %+v", scaled)
	}
	types := map[string]map[string]string{}
	for _, tr := range scaled[0].Triggers {
		types[tr.Type] = tr.Metadata
	}
	if js := types["nats-jetstream"]; js["stream"] != "CHAT_IN" || js["consumer"] != "chatbuf-worker" || js["lagThreshold"] == "" {
		t.Errorf("nats-jetstream trigger = %v", js)
	}
	if p := types["prometheus"]; p["query"] == "" || p["serverAddress"] == "" || p["threshold"] == "" {
		t.Errorf("prometheus trigger = %v", p)
	}
}

// Every file the monitoring compose profile mounts exists.
func TestComposeMonitoringMountsExist(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Profiles []string `yaml:"profiles"`
			Volumes  []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	mounted := 0
	for _, name := range []string{"prometheus", "grafana"} {
		s, ok := c.Services[name]
		if !ok || !slices.Contains(s.Profiles, "monitoring") {
			t.Fatalf("docker-compose.yml: no service %s in profile monitoring", name)
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") {
				continue
			}
			mounted++
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
	if mounted < 4 {
		t.Errorf("monitoring services mount %d files, want prometheus.yml, alerts.yml and grafana's two folders", mounted)
	}
}

// metricRef is a metric name and the label matchers a query puts on it.
var metricRef = regexp.MustCompile(`\b((?:chatbuf|process|go)_[a-z0-9_]+)(\{[^}]*\})?`)
var matcher = regexp.MustCompile(`([a-z_]+)="([^"]*)"`)

// Every metric, and every series picked by a label value, that the
// dashboard, the alerts and the ScaledObject use is on a real worker's
// /metrics before any message went through it.
func TestQueriesUseRealMetrics(t *testing.T) {
	var queries []string
	for _, r := range readRules(t) {
		queries = append(queries, r.Expr)
	}
	for _, p := range readDashboard(t).Panels {
		for _, q := range p.Targets {
			queries = append(queries, q.Expr)
		}
	}
	for _, m := range readManifests(t) {
		if m.Kind == "ScaledObject" {
			var s scaledObjectSpec
			if err := m.Spec.Decode(&s); err != nil {
				t.Fatal(err)
			}
			for _, tr := range s.Triggers {
				if q := tr.Metadata["query"]; q != "" {
					queries = append(queries, q)
				}
			}
		}
	}
	body := scrapeWorker(t)
	types := map[string]string{}
	var series []string
	for line := range strings.SplitSeq(body, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		} else if line != "" && !strings.HasPrefix(line, "#") {
			series = append(series, line)
		}
	}
	checked := 0
	for _, q := range queries {
		for _, m := range metricRef.FindAllStringSubmatch(q, -1) {
			name := m[1]
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && types[b] == "histogram" {
					base = b
				}
			}
			if _, ok := types[base]; !ok {
				t.Errorf("%q uses %s, which a worker does not export", q, name)
				continue
			}
			checked++
			for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
				if lm[1] == "job" {
					continue // set by Prometheus
				}
				want := lm[1] + `="` + lm[2] + `"`
				if !slices.ContainsFunc(series, func(s string) bool { return strings.HasPrefix(s, name+"{") && strings.Contains(s, want) }) {
					t.Errorf("%q selects %s{%s}: no such series on a fresh worker (initialise it)", q, name, want)
				}
			}
		}
	}
	if checked < 15 {
		t.Errorf("only %d metric references checked: the pattern is out of date?", checked)
	}
	// Every label value the dashboard's "by reason" panels and the alerts
	// rely on exists before the first event.
	for _, want := range []string{`chatbuf_batches_total{reason="idle"}`, `chatbuf_batches_total{reason="bytes"}`,
		`chatbuf_batches_total{reason="end"}`, `chatbuf_messages_dead_total{reason="store_rejected"}`,
		`chatbuf_messages_dead_total{reason="batch_rejected"}`, `chatbuf_errors_total{component="redis"}`,
		`chatbuf_store_mode{mode="local"}`, "chatbuf_backlog_conversations ", "chatbuf_due_conversations "} {
		if !slices.ContainsFunc(series, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("fresh worker's /metrics lacks %s", want)
		}
	}
}

var buildOnce struct {
	sync.Once
	bin string
	err error
}

// scrapeWorker builds and starts a worker on a private Redis and NATS and
// returns its /metrics once it is ready.
func scrapeWorker(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chatbuf-deploy-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "worker")
		out, err := exec.Command("go", "build", "-o", buildOnce.bin, "../cmd/worker").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("build the worker: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(buildOnce.bin)) })
	rs := redistest.Start(t)
	ns := natstest.Embedded(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(buildOnce.bin)
	cmd.Env = append(os.Environ(), "REDIS_HOST=127.0.0.1", "REDIS_PORT="+strconv.Itoa(rs.Port), "NATS_URL="+ns.URL,
		"METRICS_ADDR="+addr, "LOG_LEVEL=warn")
	var log bytes.Buffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("worker exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
