package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of private redis-server processes owned by one
// test: masters, each with its replicas, every node on free loopback ports
// with its own data directory and append-only file.
type Cluster struct {
	tb       testing.TB
	masters  int
	replicas int
	version  string

	mu     sync.Mutex
	nodes  []*Server      // in the order given to redis-cli --cluster create
	killed map[string]int // KillMaster's victims: address -> lowest slot they served
}

// ClusterNodeTimeout is the --cluster-node-timeout of every node: a master
// unreachable this long is failed over to one of its replicas.
const ClusterNodeTimeout = 2 * time.Second

// StartCluster starts masters*(1+replicasPerMaster) redis-server processes
// in cluster mode (append-only persistence on, node timeout
// ClusterNodeTimeout), joins them with `redis-cli --cluster create`, and
// waits until every node reports cluster_state:ok with all 16384 slots
// served and every replica in sync with its master. Everything is killed
// when the test ends. It fails the test with a clear message when
// redis-server or redis-cli is missing or the cluster does not form.
func StartCluster(tb testing.TB, masters, replicasPerMaster int) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: a Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses fewer), got %d", masters)
	}
	if replicasPerMaster < 0 {
		tb.Fatalf("redistest: replicasPerMaster = %d", replicasPerMaster)
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: redis-server not found in PATH (install it: apt-get install -y redis-server): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redistest: redis-cli not found in PATH (install it: apt-get install -y redis-tools): %v", err)
	}
	out, err := exec.Command(server, "--version").Output()
	if err != nil {
		tb.Fatalf("redistest: %s --version: %v", server, err)
	}
	version, major := redisVersion(string(out))
	c := &Cluster{tb: tb, masters: masters, replicas: replicasPerMaster, version: version, killed: map[string]int{}}
	tb.Cleanup(c.stopAll)

	total := masters * (1 + replicasPerMaster)
	for i := range total {
		c.nodes = append(c.nodes, c.startNode(server, major, i))
	}
	addrs := c.Addrs()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...),
		"--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	create := exec.CommandContext(ctx, cli, args...)
	if b, err := create.CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	if err := c.waitHealthy(90 * time.Second); err != nil {
		tb.Fatalf("redistest: cluster of %d nodes (%d masters, %d replicas each) not ready: %v", total, masters, replicasPerMaster, err)
	}
	return c
}

// redisVersion returns the version in `redis-server --version` output
// ("Redis server v=7.0.15 sha=...") and its major number.
func redisVersion(out string) (string, int) {
	m := regexp.MustCompile(`v=(\d+)\.[\w.]+`).FindStringSubmatch(out)
	if m == nil {
		return strings.TrimSpace(out), 0
	}
	major, _ := strconv.Atoi(m[1])
	return m[0][2:], major
}

// startNode starts node i on free ports. Redis 7 takes the cluster bus port
// as --cluster-port; older servers use port+10000, which must then be free
// and below 65536 as well.
func (c *Cluster) startNode(bin string, major, i int) *Server {
	c.tb.Helper()
	var lastErr error
	for range 10 {
		dir := c.tb.TempDir() // nothing left from a failed attempt
		port, err := FreePort()
		if err != nil {
			c.tb.Fatalf("redistest: %v", err)
		}
		var bus []string
		if major >= 7 {
			busPort, err := FreePort()
			if err != nil {
				c.tb.Fatalf("redistest: %v", err)
			}
			if busPort == port {
				continue
			}
			bus = []string{"--cluster-port", strconv.Itoa(busPort)}
		} else if port+10000 > 65535 || !portFree(port+10000) {
			continue
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir, tb: c.tb}
		s.args = append([]string{bin,
			"--bind", "127.0.0.1",
			"--port", strconv.Itoa(port),
			"--dir", dir,
			"--save", "",
			"--appendonly", "yes",
			"--appendfsync", "everysec",
			"--protected-mode", "no",
			"--logfile", filepath.Join(dir, "redis.log"),
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
			// A replica may take over however long its link to the dead
			// master was down: in a test, availability over freshness.
			"--cluster-replica-validity-factor", "0",
		}, bus...)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	c.tb.Fatalf("redistest: cannot start cluster node %d: %v", i, lastErr)
	return nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
}

// Version is the redis-server version, such as "7.0.15".
func (c *Cluster) Version() string { return c.version }

// Addrs returns every node's host:port, masters and replicas, alive or not:
// the seed list for REDIS_ADDRS.
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Node returns the node with the given address (nil if none).
func (c *Cluster) Node(addr string) *Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Masters returns the addresses of the masters that serve slots, as the
// first live node sees them, ordered by their lowest slot.
func (c *Cluster) Masters() []string {
	c.tb.Helper()
	v, err := c.view()
	if err != nil {
		c.tb.Fatalf("redistest: cluster masters: %v", err)
	}
	return v.masters()
}

// ClusterOptions returns go-redis options seeded with every node.
func (c *Cluster) ClusterOptions() *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
}

// Client returns a go-redis cluster client, closed at test end.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(c.ClusterOptions())
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// KillMaster kills (SIGKILL) the i-th master of Masters() and returns its
// address. One of its replicas takes over after about ClusterNodeTimeout;
// wait for that with WaitFailover.
func (c *Cluster) KillMaster(i int) string {
	c.tb.Helper()
	v, err := c.view()
	if err != nil {
		c.tb.Fatalf("redistest: cluster masters: %v", err)
	}
	masters := v.masters()
	if i < 0 || i >= len(masters) {
		c.tb.Fatalf("redistest: KillMaster(%d): the cluster has %d masters", i, len(masters))
	}
	n := c.Node(masters[i])
	if n == nil {
		c.tb.Fatalf("redistest: master %s is not a node of this cluster", masters[i])
	}
	for _, e := range v {
		if e.addr == n.Addr {
			c.mu.Lock()
			c.killed[n.Addr] = e.first
			c.mu.Unlock()
		}
	}
	n.Stop()
	return n.Addr
}

// WaitFailover waits until the cluster serves every slot again without the
// master that KillMaster killed: every live node reports cluster_state:ok
// and 16384 slots ok, and sees the dead master's slots served by another
// node (its promoted replica). It returns the promoted replica's address,
// and fails the test after timeout.
func (c *Cluster) WaitFailover(dead string, timeout time.Duration) string {
	c.tb.Helper()
	c.mu.Lock()
	slot, ok := c.killed[dead]
	c.mu.Unlock()
	if !ok {
		c.tb.Fatalf("redistest: WaitFailover(%s): not a master killed with KillMaster", dead)
	}
	deadline := time.Now().Add(timeout)
	for {
		promoted, err := c.failedOver(dead, slot)
		if err == nil {
			return promoted
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("redistest: no failover of master %s within %v: %v", dead, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) failedOver(dead string, slot int) (string, error) {
	promoted := ""
	for _, n := range c.live() {
		if err := clusterOK(n); err != nil {
			return "", err
		}
		v, err := nodesOf(n)
		if err != nil {
			return "", err
		}
		o := v.owner(slot)
		switch {
		case o.addr == "":
			return "", fmt.Errorf("%s sees no owner of slot %d", n.Addr, slot)
		case o.addr == dead:
			return "", fmt.Errorf("%s still sees the dead %s serving slot %d (flags %s)", n.Addr, dead, slot, o.flags)
		case promoted != "" && o.addr != promoted:
			return "", fmt.Errorf("nodes disagree on the owner of slot %d: %s and %s", slot, promoted, o.addr)
		}
		promoted = o.addr
	}
	if promoted == "" {
		return "", fmt.Errorf("no live node")
	}
	return promoted, nil
}

// RestartNode starts a killed node again on its port with its data and
// nodes.conf, and waits until the cluster is healthy with every node: a
// former master rejoins as a replica of the node that replaced it.
func (c *Cluster) RestartNode(addr string, timeout time.Duration) {
	c.tb.Helper()
	n := c.Node(addr)
	if n == nil {
		c.tb.Fatalf("redistest: %s is not a node of this cluster", addr)
	}
	n.Restart()
	if err := c.waitHealthy(timeout); err != nil {
		c.tb.Fatalf("redistest: cluster not healthy within %v of restarting %s: %v", timeout, addr, err)
	}
}

// WaitHealthy waits until every live node reports cluster_state:ok and all
// slots served, every node (dead ones included) is known, and every live
// replica is in sync with its master.
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.tb.Helper()
	if err := c.waitHealthy(timeout); err != nil {
		c.tb.Fatalf("redistest: cluster not healthy within %v: %v", timeout, err)
	}
}

func (c *Cluster) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.healthy()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) healthy() error {
	c.mu.Lock()
	total := len(c.nodes)
	c.mu.Unlock()
	live := c.live()
	for _, n := range live {
		if err := clusterOK(n); err != nil {
			return err
		}
		info, err := infoOf(n, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if known, _ := strconv.Atoi(info["cluster_known_nodes"]); known != total {
			return fmt.Errorf("%s knows %d nodes, want %d", n.Addr, known, total)
		}
		v, err := nodesOf(n)
		if err != nil {
			return err
		}
		if got := len(v.masters()); got != c.masters {
			return fmt.Errorf("%s sees %d masters serving slots, want %d", n.Addr, got, c.masters)
		}
		repl, err := infoOf(n, "INFO", "replication")
		if err != nil {
			return err
		}
		if repl["role"] == "slave" && repl["master_link_status"] != "up" {
			return fmt.Errorf("replica %s: link to master %s:%s is %s", n.Addr, repl["master_host"], repl["master_port"], repl["master_link_status"])
		}
	}
	return nil
}

// live returns the nodes whose process runs.
func (c *Cluster) live() []*Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*Server
	for _, n := range c.nodes {
		n.mu.Lock()
		running := n.cmd != nil
		n.mu.Unlock()
		if running {
			live = append(live, n)
		}
	}
	return live
}

// view returns CLUSTER NODES of the first live node that answers.
func (c *Cluster) view() (clusterView, error) {
	var err error
	for _, n := range c.live() {
		var v clusterView
		if v, err = nodesOf(n); err == nil {
			return v, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("no live node")
	}
	return nil, err
}

// clusterOK checks that a node reports cluster_state:ok and all slots ok.
func clusterOK(n *Server) error {
	info, err := infoOf(n, "CLUSTER", "INFO")
	if err != nil {
		return err
	}
	if info["cluster_state"] != "ok" {
		return fmt.Errorf("%s: cluster_state:%s", n.Addr, info["cluster_state"])
	}
	if info["cluster_slots_ok"] != "16384" {
		return fmt.Errorf("%s: cluster_slots_ok:%s (assigned %s, pfail %s, fail %s)", n.Addr,
			info["cluster_slots_ok"], info["cluster_slots_assigned"], info["cluster_slots_pfail"], info["cluster_slots_fail"])
	}
	return nil
}

// call runs one command on a node with a short timeout.
func call(n *Server, args ...any) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := rc.Do(ctx, args...).Text()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %w", n.Addr, args, err)
	}
	return s, nil
}

// infoOf parses the key:value lines of CLUSTER INFO or INFO <section>.
func infoOf(n *Server, args ...any) (map[string]string, error) {
	s, err := call(n, args...)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// nodeEntry is one line of CLUSTER NODES.
type nodeEntry struct {
	id, addr, flags, masterID string
	master                    bool
	slots                     int // how many slots it serves
	first                     int // its lowest slot (-1: none)
}

type clusterView []nodeEntry

// masters returns the masters serving slots, not flagged failed, ordered by
// their lowest slot.
func (v clusterView) masters() []string {
	var ms []nodeEntry
	for _, e := range v {
		if e.master && e.slots > 0 && !strings.Contains(e.flags, "fail") {
			ms = append(ms, e)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].first < ms[j].first })
	out := make([]string, len(ms))
	for i, e := range ms {
		out[i] = e.addr
	}
	return out
}

// owner returns the node that serves the given slot ("" if none).
func (v clusterView) owner(slot int) nodeEntry {
	for _, e := range v {
		if e.master && e.first == slot {
			return e
		}
	}
	return nodeEntry{}
}

// nodesOf parses CLUSTER NODES of a node:
// <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
func nodesOf(n *Server) (clusterView, error) {
	s, err := call(n, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var v clusterView
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		e := nodeEntry{id: f[0], addr: addr, flags: f[2], masterID: f[3], master: strings.Contains(f[2], "master"), first: -1}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				continue
			}
			e.slots += b - a + 1
			if e.first < 0 || a < e.first {
				e.first = a
			}
		}
		v = append(v, e)
	}
	return v, nil
}
