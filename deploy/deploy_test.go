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
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
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
// each with an expression that Prometheus's PromQL parser accepts, a valid
// duration, a severity and a summary.
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
		if _, err := ruleQuery(r).parse(); err != nil {
			t.Error(err)
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

// query is a PromQL expression and where it is written.
type query struct {
	where string // the file, and the alert, panel or trigger in it
	expr  string
}

var promql = parser.NewParser(parser.Options{})

// parse parses the query with Prometheus's own PromQL parser.
func (q query) parse() (parser.Expr, error) {
	expr, err := promql.ParseExpr(q.expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
	}
	return expr, nil
}

// selectors returns the vector selectors of expr, those of its range
// vectors and subqueries included: the series it reads.
func selectors(expr parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

func ruleQuery(r rule) query {
	return query{where: "prometheus/alerts.yml: alert " + r.Alert, expr: r.Expr}
}

var (
	grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)
	promqlString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
)

// expandGrafana gives a dashboard query the values Grafana gives its
// variables: the interval and range ones become 5m (300000 and 300 in
// their _ms and _s forms), and any variable inside a string, a label
// value, matches everything (.*). A variable elsewhere stays, and the
// parser rejects it.
func expandGrafana(expr string) string {
	expr = promqlString.ReplaceAllStringFunc(expr, func(s string) string {
		return grafanaVariable.ReplaceAllString(s, ".*")
	})
	return grafanaVariable.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVariable.FindStringSubmatch(v)
		switch m[1] + m[2] + m[3] {
		case "__interval", "__rate_interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		return v
	})
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

func dashboardQueries(d dashboard) []query {
	var out []query
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out = append(out, query{
				where: fmt.Sprintf("grafana/dashboards/chatbuf.json: panel %d %q, target %s", p.ID, p.Title, q.RefID),
				expr:  expandGrafana(q.Expr),
			})
		}
	}
	return out
}

// The dashboard has a panel for each subject an operator needs, with
// queries that Prometheus's PromQL parser accepts once Grafana's variables
// have values.
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
	}
	for _, q := range dashboardQueries(d) {
		if _, err := q.parse(); err != nil {
			t.Error(err)
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
	file string
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
			m.file = f
			out = append(out, m)
		}
	}
	return out
}

// scaledObjectQueries returns the queries of the ScaledObjects' Prometheus
// triggers.
func scaledObjectQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, m := range readManifests(t) {
		if m.Kind != "ScaledObject" {
			continue
		}
		var s scaledObjectSpec
		if err := m.Spec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		for _, tr := range s.Triggers {
			if q := tr.Metadata["query"]; q != "" {
				out = append(out, query{where: fmt.Sprintf("%s: ScaledObject %s, trigger %s", m.file, m.Metadata.Name, tr.Type), expr: q})
			}
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
	for _, q := range scaledObjectQueries(t) {
		if _, err := q.parse(); err != nil {
			t.Error(err)
		}
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

// selects reports whether one of the series matches all the matchers.
func selects(series []labels.Labels, matchers []*labels.Matcher) bool {
	return slices.ContainsFunc(series, func(ls labels.Labels) bool {
		for _, m := range matchers {
			if !m.Matches(ls.Get(m.Name)) {
				return false
			}
		}
		return true
	})
}

// Every metric, and every series picked by label matchers, that the
// dashboard, the alerts and the ScaledObject read (their selectors, as
// Prometheus's PromQL parser finds them) is on a real worker's /metrics
// before any message went through it.
func TestQueriesUseRealMetrics(t *testing.T) {
	var queries []query
	for _, r := range readRules(t) {
		queries = append(queries, ruleQuery(r))
	}
	queries = append(queries, dashboardQueries(readDashboard(t))...)
	queries = append(queries, scaledObjectQueries(t)...)

	series := map[string][]labels.Labels{} // by metric name
	for line := range strings.SplitSeq(scrapeWorker(t), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics line %q has no value", line)
		}
		ls, err := promql.ParseMetric(line[:i])
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		name := ls.Get(model.MetricNameLabel)
		series[name] = append(series[name], ls)
	}

	checked := 0
	for _, q := range queries {
		expr, err := q.parse()
		if err != nil {
			t.Error(err)
			continue
		}
		for _, vs := range selectors(expr) {
			if vs.Name == "" {
				t.Errorf("%s: %s names no metric", q.where, vs)
				continue
			}
			if vs.Name == "up" {
				continue // Prometheus's own, one for each target it scrapes
			}
			have := series[vs.Name]
			if len(have) == 0 {
				t.Errorf("%s: %q uses %s, which a worker does not export", q.where, q.expr, vs.Name)
				continue
			}
			var ms []*labels.Matcher
			for _, m := range vs.LabelMatchers {
				switch m.Name {
				case model.MetricNameLabel, "job", "instance": // the name, and the labels Prometheus adds to a target's series
				default:
					ms = append(ms, m)
				}
			}
			if !selects(have, ms) {
				t.Errorf("%s: %q selects %s: no such series on a fresh worker (initialise it)", q.where, q.expr, vs)
				continue
			}
			checked++
		}
	}
	if checked < 30 {
		t.Errorf("only %d selectors checked: are the queries read?", checked)
	}
	// Every label value the dashboard's "by reason" panels and the alerts
	// rely on exists before the first event.
	for _, want := range []string{`chatbuf_batches_total{reason="idle"}`, `chatbuf_batches_total{reason="bytes"}`,
		`chatbuf_batches_total{reason="end"}`, `chatbuf_messages_dead_total{reason="store_rejected"}`,
		`chatbuf_messages_dead_total{reason="batch_rejected"}`, `chatbuf_errors_total{component="redis"}`,
		`chatbuf_store_mode{mode="local"}`, "chatbuf_backlog_conversations", "chatbuf_due_conversations"} {
		ms, err := promql.ParseMetricSelector(want)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ms, func(m *labels.Matcher) bool { return m.Name == model.MetricNameLabel })
		if !selects(series[ms[i].Value], ms) {
			t.Errorf("fresh worker's /metrics lacks %s", want)
		}
	}
}

// The dashboard's queries parse with Grafana's variables in them.
func TestGrafanaVariablesExpand(t *testing.T) {
	in := `sum by (le) (rate(chatbuf_flush_duration_seconds_bucket{job=~"$job", instance=~"${instance:regex}", reason='[[reason]]'}[$__rate_interval])) / $__range_s`
	want := `sum by (le) (rate(chatbuf_flush_duration_seconds_bucket{job=~".*", instance=~".*", reason='.*'}[5m])) / 300`
	got := expandGrafana(in)
	if got != want {
		t.Fatalf("expandGrafana(%q)\n = %q\nwant %q", in, got, want)
	}
	if _, err := (query{where: "test", expr: got}).parse(); err != nil {
		t.Fatal(err)
	}
	if _, err := (query{where: "test", expr: expandGrafana(`sum by ($group) (chatbuf_ready)`)}).parse(); err == nil {
		t.Error("a variable outside a string and not an interval parses")
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
