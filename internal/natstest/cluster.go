package natstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/internal/procs"
)

// Cluster is a JetStream cluster of NATS servers owned by one test: each
// server with its own client, route and monitoring ports on loopback, its
// own store directory and server name, routes to all the others.
type Cluster struct {
	Version string // nats-server version

	tb       testing.TB
	embedded bool
	bin      string
	nodes    []*clusterNode
}

// clusterNode is one server of a Cluster.
type clusterNode struct {
	name                      string
	port, routePort, httpPort int
	dir, conf                 string
	mu                        sync.Mutex
	cmd                       *exec.Cmd      // binary, while running
	done                      chan struct{}  // closed when cmd has exited
	srv                       *server.Server // embedded, while running
	stderr                    *lockedBuffer
}

// ClusterReadyTimeout bounds how long StartCluster and Restart wait for the
// JetStream meta group to elect a leader and every server to be current.
const ClusterReadyTimeout = 60 * time.Second

// StartCluster starts n nats-server processes (the binary on the PATH, so
// that a server can be killed as a process) in one JetStream cluster, and
// waits until the meta group has a leader that every server knows and
// every server's /healthz is ok. Everything stops when the test ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		tb.Fatalf("natstest: nats-server not found in PATH (install it: apt-get install -y nats-server): %v", err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		tb.Fatalf("natstest: %s --version: %v", bin, err)
	}
	c := &Cluster{tb: tb, bin: bin, Version: strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server: ")}
	c.start(n)
	return c
}

// StartClusterEmbedded is StartCluster with the nats-server compiled into
// the test binary (the current version): Kill is then a server shutdown in
// the test process rather than a process kill.
func StartClusterEmbedded(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, embedded: true, Version: server.VERSION}
	c.start(n)
	return c
}

func (c *Cluster) start(n int) {
	c.tb.Helper()
	if n < 1 {
		c.tb.Fatalf("natstest: a cluster of %d servers", n)
	}
	c.tb.Cleanup(c.stopAll)
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		// Free ports are found by listening and closing: on a busy machine
		// another process may take one before the server binds it. Then
		// start over with new ports.
		if err = c.tryCluster(n); err == nil {
			break
		}
		c.tb.Logf("natstest: cluster start, attempt %d: %v", attempt, err)
		c.stopAll()
	}
	if err != nil {
		c.tb.Fatalf("natstest: %v", err)
	}
	if err := c.waitReady(c.nodes, ClusterReadyTimeout); err != nil {
		c.tb.Fatalf("natstest: JetStream cluster of %d (%s) not ready after %v: %v", n, c.Version, ClusterReadyTimeout, err)
	}
}

// tryCluster configures n servers on new free ports and starts them.
func (c *Cluster) tryCluster(n int) error {
	c.nodes = nil
	for i := range n {
		nd := &clusterNode{name: fmt.Sprintf("n%d", i), dir: c.tb.TempDir()}
		for _, p := range []*int{&nd.port, &nd.routePort, &nd.httpPort} {
			port, err := procs.FreePort()
			if err != nil {
				return err
			}
			*p = port
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		var routes []string
		for _, o := range c.nodes {
			if o != nd {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.routePort))
			}
		}
		nd.conf = filepath.Join(nd.dir, "nats-server.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %s
}
cluster {
  name: chatbuf
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, nd.name, nd.port, nd.httpPort, strconv.Quote(filepath.Join(nd.dir, "js")), nd.routePort, strings.Join(routes, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			return err
		}
	}
	for i := range c.nodes {
		if err := c.startNode(i, 1); err != nil {
			return err
		}
	}
	return nil
}

// URLs returns the client URL of every server, for a client's server list.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = nd.url()
	}
	return urls
}

// URL returns URLs joined by commas, as NATS_URL and nats.Connect take them.
func (c *Cluster) URL() string { return strings.Join(c.URLs(), ",") }

// Name returns the server name of server i, as JetStream's cluster info
// (a stream's leader, its replicas) names it.
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Index returns the index of the server with the given name (-1 if none).
func (c *Cluster) Index(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	return -1
}

// Conn connects a client to the whole cluster, closed at test end.
func (c *Cluster) Conn(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(c.URL(), opts...)
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", c.URL(), err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Kill stops server i: SIGKILL for the binary, an immediate shutdown for an
// embedded server. Its store stays for Restart.
func (c *Cluster) Kill(i int) {
	c.nodes[i].kill()
}

// Restart starts a killed server i again with its ports and store, and
// waits until it is back in the cluster and current.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if err := c.startNode(i, 50); err != nil { // a port of a killed server may linger briefly
		c.tb.Fatalf("natstest: restart: %v", err)
	}
	if err := c.waitReady([]*clusterNode{c.nodes[i]}, ClusterReadyTimeout); err != nil {
		c.tb.Fatalf("natstest: server %s not current in the cluster after %v: %v", c.nodes[i].name, ClusterReadyTimeout, err)
	}
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		wg.Go(nd.kill)
	}
	wg.Wait()
}

func (nd *clusterNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.port) }

// startNode starts server i, trying up to attempts times.
func (c *Cluster) startNode(i, attempts int) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil || nd.srv != nil {
		return fmt.Errorf("server %s is running", nd.name)
	}
	var lastErr error
	for range attempts {
		if lastErr = c.tryStart(nd); lastErr == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lastErr
}

func (c *Cluster) tryStart(nd *clusterNode) error {
	if c.embedded {
		opts, err := server.ProcessConfigFile(nd.conf)
		if err != nil {
			return fmt.Errorf("server %s: config: %w", nd.name, err)
		}
		opts.NoLog, opts.NoSigs = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			return fmt.Errorf("server %s: %w", nd.name, err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(15 * time.Second) {
			srv.Shutdown()
			return fmt.Errorf("embedded server %s on port %d not ready after 15s", nd.name, nd.port)
		}
		nd.srv = srv
		return nil
	}
	cmd := exec.Command(c.bin, "-c", nd.conf, "-l", filepath.Join(nd.dir, "nats.log"))
	cmd.SysProcAttr = procs.DieWithParent() // no server outlives a killed test
	nd.stderr = &lockedBuffer{}
	cmd.Stderr = nd.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("nats-server %s exited at start; stderr: %s; log: %s", nd.name, nd.stderr, logTail(nd.dir))
		default:
		}
		if nc, err := nats.Connect(nd.url(), nats.Timeout(200*time.Millisecond), nats.NoReconnect()); err == nil {
			nc.Close()
			nd.cmd, nd.done = cmd, done
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("nats-server %s on port %d not answering after 15s; stderr: %s; log: %s", nd.name, nd.port, nd.stderr, logTail(nd.dir))
}

func logTail(dir string) string {
	return strings.Join(procs.LogTail(filepath.Join(dir, "nats.log"), 10), "\n")
}

func (nd *clusterNode) kill() {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	stopServer(nd.srv, nd.cmd, nd.done, nd.port, nd.routePort, nd.httpPort)
	nd.srv, nd.cmd, nd.done = nil, nil, nil
}

func (nd *clusterNode) running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.cmd != nil || nd.srv != nil
}

// jsz is the part of a server's /jsz that readiness looks at.
type jsz struct {
	Meta *struct {
		Name     string `json:"name"`
		Leader   string `json:"leader"`
		Size     int    `json:"cluster_size"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// waitReady waits until each of the given servers reports, on its
// monitoring port, a JetStream meta leader that is a running server of the
// cluster, a meta group of the cluster's size, and /healthz ok (JetStream
// current with the meta leader and its streams and consumers).
func (c *Cluster) waitReady(which []*clusterNode, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.ready(which)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) ready(which []*clusterNode) error {
	hc := http.Client{Timeout: 2 * time.Second}
	for _, nd := range which {
		if !nd.running() {
			return fmt.Errorf("server %s is not running", nd.name)
		}
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", nd.httpPort))
		if err != nil {
			return fmt.Errorf("server %s: /jsz: %w", nd.name, err)
		}
		var j jsz
		err = json.NewDecoder(resp.Body).Decode(&j)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("server %s: /jsz: %w", nd.name, err)
		}
		if j.Meta == nil || j.Meta.Leader == "" {
			return fmt.Errorf("server %s: no JetStream meta leader yet", nd.name)
		}
		if l := c.Index(j.Meta.Leader); l < 0 || !c.nodes[l].running() {
			return fmt.Errorf("server %s: meta leader %q is not a running server of the cluster", nd.name, j.Meta.Leader)
		}
		if j.Meta.Size != len(c.nodes) {
			return fmt.Errorf("server %s: meta group of %d, want %d", nd.name, j.Meta.Size, len(c.nodes))
		}
		resp, err = hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.httpPort))
		if err != nil {
			return fmt.Errorf("server %s: /healthz: %w", nd.name, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("server %s: /healthz %d: %s", nd.name, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	return nil
}
