package e2e

// Clustered servers: worker processes on a Redis Cluster (REDIS_ADDRS) with
// and without a master failover, and on a three-node JetStream cluster
// (CHAT_STREAM_REPLICAS=3) with and without a node killed mid-load.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/verify"
)

// newClusterSystem is a system whose workers get env (REDIS_ADDRS or
// REDIS_HOST/PORT, NATS_URL...) and whose producer and checks connect to
// natsURL (a comma-separated list for a NATS cluster). Its redis is nil
// unless the caller sets it: the tests that use it do not stop or restart
// "the" Redis.
func newClusterSystem(t *testing.T, natsURL, natsVersion string, env ...string) *system {
	s := &system{t: t, nats: &natstest.Server{URL: natsURL, Version: natsVersion}}
	s.env = append([]string{
		"NATS_URL=" + natsURL,
		"LOG_LEVEL=warn",
		"CHAT_FLUSH_MAX_AGE=2s",
		"CHAT_LOCK_TTL=2s",
		"CHAT_ACK_WAIT=5s",
	}, env...)
	return s
}

// redisClusterSystem starts a Redis Cluster of 3 masters with a replica
// each and a nats-server, for workers with REDIS_ADDRS.
func redisClusterSystem(t *testing.T, env ...string) (*system, *redistest.Cluster) {
	t.Helper()
	start := time.Now()
	rc := redistest.StartCluster(t, 3, 1)
	n := natstest.Binary(t)
	s := newClusterSystem(t, n.URL, n.Version, append([]string{"REDIS_ADDRS=" + strings.Join(rc.Addrs(), ",")}, env...)...)
	s.nats = n
	t.Logf("redis %s cluster: masters %v of nodes %v (ready in %v); nats-server %s", rc.Version(), rc.Masters(), rc.Addrs(),
		time.Since(start).Round(time.Millisecond), n.Version)
	return s, rc
}

// requireKeysOnEveryMaster fails the test unless every master holds keys:
// the workers did spread conversations over the cluster's slots.
func requireKeysOnEveryMaster(t *testing.T, rc *redistest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range rc.Masters() {
		n, err := rc.Node(addr).Client(t).DBSize(ctx).Result()
		if err != nil {
			t.Errorf("DBSIZE on master %s: %v", addr, err)
		} else if n == 0 {
			t.Errorf("master %s holds no keys: the conversations were not spread over the cluster", addr)
		} else {
			t.Logf("master %s: %d keys", addr, n)
		}
	}
}

// requireNoDupNoMisplace fails the test on a duplicated or misplaced message
// or a malformed batch; loss is only logged.
func requireNoDupNoMisplace(t *testing.T, r *verify.Report) {
	t.Helper()
	if r.Duplicated != 0 || r.Misplaced != 0 || r.Malformed != 0 {
		t.Errorf("report: duplicated %d, misplaced %d, malformed %d (want 0 each); problems: %v",
			r.Duplicated, r.Misplaced, r.Malformed, r.Problems)
	}
}

// TestRedisClusterEndToEnd: three worker processes on a Redis Cluster of 3
// masters and 3 replicas (REDIS_ADDRS): 10,000 messages over 300
// conversations, hostile ids among them, each in exactly one well-formed
// batch, and every master holding some of the keys.
func TestRedisClusterEndToEnd(t *testing.T) {
	s, rc := redisClusterSystem(t)
	ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	res := s.load(ctx, "--conversations", "300", "--messages", "10000", "--hostile", "--verify-timeout", "2m")
	s.checkExactlyOnce(t, res.Report, 10000)
	t.Logf("%.1fs; %d batches %v, out of order %d, latency %s", time.Since(start).Seconds(),
		res.Report.Batches, res.Report.BatchesByReason, res.Report.OutOfOrder, res.Report.Latency)
	logRow(t, "redis cluster 3+3 ("+rc.Version()+"): no fault", res.Report)
	requireKeysOnEveryMaster(t, rc)
	requireAlive(t, ws)
	stopAll(t, ws)
}

// TestRedisClusterFailover: while the load publishes, one master of the
// Redis Cluster is killed (SIGKILL); its replica takes over after the node
// timeout (2s), the workers ride the outage out, and the killed node is
// started again (it rejoins as a replica of its successor, so that the
// shard has a replica again). Replication is asynchronous: without
// REDIS_WAIT_REPLICAS the acked appends the replica had not yet received
// are lost with the master, so that run only logs its figures and requires
// no duplicate and no misplaced message. With REDIS_WAIT_REPLICAS=1 a
// message is acked only once a replica has it: exactly once, with the
// default in-memory fallback and without it (REDIS_FALLBACK=false: the
// workers wait for Redis instead), so that a failure points at one or the
// other.
func TestRedisClusterFailover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   []string
		exact bool
	}{
		{"async", nil, false},
		{"wait-replicas-1", []string{"REDIS_WAIT_REPLICAS=1"}, true},
		{"wait-replicas-1-no-fallback", []string{"REDIS_WAIT_REPLICAS=1", "REDIS_FALLBACK=false"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const msgs, rate = 10000, 800 // ~12s of publishing
			s, rc := redisClusterSystem(t, append([]string{"LOG_LEVEL=info"}, tc.env...)...)
			ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			start := time.Now()
			args := []string{"--conversations", "300", "--hostile", "--messages", itoa(msgs), "--rate", itoa(rate), "--verify-timeout", "90s"}
			if !slices.Contains(tc.env, "REDIS_FALLBACK=false") {
				args = append(args, "--allow-unordered") // the in-memory fallback keeps no order
			}
			ld := s.startLoad(ctx, args...)
			if !waitOrPublished(ld, 3*time.Second) {
				t.Fatalf("the load finished within 3s, before the master was killed")
			}
			dead := rc.KillMaster(0)
			t.Logf("%5.1fs: kill -9 master %s", time.Since(start).Seconds(), dead)
			promoted := rc.WaitFailover(dead, 45*time.Second)
			t.Logf("%5.1fs: failed over: %s serves the dead master's slots", time.Since(start).Seconds(), promoted)
			if ld.published() {
				t.Errorf("the load finished during the failover: not a mid-load fault")
			}
			rc.RestartNode(dead, 60*time.Second)
			t.Logf("%5.1fs: %s back as a replica; cluster healthy, masters %v", time.Since(start).Seconds(), dead, rc.Masters())

			res := ld.wait(t)
			requireAlive(t, ws)
			r := res.Report
			fault := "redis cluster 3+3: kill -9 master+failover"
			if tc.exact {
				fault += " (" + strings.Join(tc.env, " ") + ")"
				s.checkExactlyOnce(t, r, res.Published)
				if res.Published != msgs || res.Failures > 0 {
					t.Errorf("producer: %d of %d accepted, %d failed after retries (%v)", res.Published, msgs, res.Failures, res.Errors)
				}
			} else {
				fault += " (async replication)"
				requireNoDupNoMisplace(t, r)
				if r.Lost > 0 {
					t.Logf("%d of %d acked messages lost with the master (asynchronous replication; see the wait-replicas-1 run); e.g. %v",
						r.Lost, r.Published, r.LostSample)
					s.explain(t, r)
				}
			}
			t.Logf("%.1fs; %d batches %v, %d redelivered, %d malformed, unexpected %d, out of order %d; latency %s",
				time.Since(start).Seconds(), r.Batches, r.BatchesByReason, r.RedeliveredBatches, r.Malformed, r.Unexpected,
				r.OutOfOrder, r.Latency)
			logRow(t, fault, r)
			stopAll(t, ws)
		})
	}
}

// TestNATSClusterEndToEnd: a JetStream cluster of three nats-server
// processes with the streams replicated three times (CHAT_STREAM_REPLICAS)
// and three workers (and the producer) given every server's URL. First a
// load without faults, exactly once; then a second load during which the
// server leading CHAT_IN is killed (SIGKILL) and, a few seconds later,
// started again: 0 lost, 0 duplicated.
//
// nats-server 2.9 cannot carry a subject holding '@' across a route: it
// joins a JetStream message's ack reply and its subject with '@' and splits
// them again at the last '@', so such a message arrives with its subject cut
// and its ack subject broken. The 2.9 cluster runs leave those hostile ids
// out; the current server's cluster (TestNATSClusterEmbeddedEndToEnd) keeps
// them.
func TestNATSClusterEndToEnd(t *testing.T) {
	start := time.Now()
	nc := natstest.StartCluster(t, 3)
	at29 := "" // the hostile ids to leave out: see above
	if strings.HasPrefix(strings.TrimPrefix(nc.Version, "v"), "2.9.") {
		at29 = "@"
	}
	r := redistest.Start(t)
	s := newClusterSystem(t, nc.URL(), nc.Version, "REDIS_HOST=127.0.0.1", "REDIS_PORT="+itoa(r.Port), "CHAT_STREAM_REPLICAS=3",
		"LOG_LEVEL=info")
	s.redis = r
	t.Logf("nats-server %s cluster %s ready in %v; redis on %s", nc.Version, nc.URL(), time.Since(start).Round(time.Millisecond), r.Addr)
	ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}

	js, err := jetstream.New(nc.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	requireReplicated(t, js, 3)

	t.Run("no-fault", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		res := s.load(ctx, "--conversations", "300", "--messages", "10000", "--hostile", "--hostile-avoid", at29, "--verify-timeout", "2m")
		s.checkExactlyOnce(t, res.Report, 10000)
		t.Logf("%.1fs; %d batches %v, out of order %d, latency %s", time.Since(start).Seconds(),
			res.Report.Batches, res.Report.BatchesByReason, res.Report.OutOfOrder, res.Report.Latency)
		logRow(t, "nats cluster R3 ("+nc.Version+"): no fault", res.Report)
	})

	t.Run("kill-leader", func(t *testing.T) {
		const msgs, rate = 10000, 800 // ~12s of publishing
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		ld := s.startLoad(ctx, "--conversations", "300", "--hostile", "--hostile-avoid", at29, "--messages", itoa(msgs), "--rate", itoa(rate),
			"--window", "50000", "--verify-timeout", "90s")
		if !waitOrPublished(ld, 3*time.Second) {
			t.Fatalf("the load finished within 3s, before a server was killed")
		}
		leader := streamInfo(t, js, "CHAT_IN").Cluster.Leader
		victim := nc.Index(leader)
		if victim < 0 {
			t.Fatalf("CHAT_IN leader %q is not a server of the cluster", leader)
		}
		t.Logf("%5.1fs: leaders: CHAT_IN %s, its consumer %s, CHAT_FLUSHED %s", time.Since(start).Seconds(), leader,
			consumerLeader(js), streamInfo(t, js, "CHAT_FLUSHED").Cluster.Leader)
		progress := sampleConsumed(ws)
		killed := time.Now()
		nc.Kill(victim)
		t.Logf("%5.1fs: kill -9 nats-server %s (CHAT_IN leader)", time.Since(start).Seconds(), leader)
		time.Sleep(3 * time.Second)
		if ld.published() {
			t.Errorf("the load finished while %s was down: not a mid-load fault", leader)
		}
		nc.Restart(victim)
		t.Logf("%5.1fs: %s restarted and current; leaders now: CHAT_IN %s, its consumer %s", time.Since(start).Seconds(), leader,
			streamInfo(t, js, "CHAT_IN").Cluster.Leader, consumerLeader(js))

		res := ld.wait(t)
		stall := progress.longestStall(killed)
		requireAlive(t, ws)
		rep := res.Report
		t.Logf("%.1fs; producer: %d of %d accepted, %d given up after retries %v, %d retries, %d duplicate PubAcks; "+
			"longest pause in consumption after the kill %v; %d batches %v, %d redelivered, %d unexpected; latency %s",
			time.Since(start).Seconds(), res.Published, msgs, res.Failures, res.Errors, res.Retries, res.DupAcks,
			stall.Round(10*time.Millisecond), rep.Batches, rep.BatchesByReason, rep.RedeliveredBatches, rep.Unexpected, rep.Latency)
		// A publish the producer gave up on was not accepted (no PubAck):
		// not a loss. Its message may have been stored all the same (the
		// PubAck lost with the old leader) and batched: verify counts it
		// unexpected.
		r := *rep
		if r.Unexpected <= res.Failures {
			r.Unexpected = 0
		}
		s.checkExactlyOnce(t, &r, res.Published)
		fault := fmt.Sprintf("nats cluster R3 (%s): kill -9 CHAT_IN leader+restart", nc.Version)
		if res.Failures > 0 {
			fault += fmt.Sprintf(" [producer gave up on %d of %d publishes]", res.Failures, msgs)
		}
		logRow(t, fault, rep)
	})
	requireAlive(t, ws)
	stopAll(t, ws)
}

// streamInfo returns a stream's info once it has a leader (one may be
// being elected).
func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	var (
		info *jetstream.StreamInfo
		err  error
	)
	for range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var st jetstream.Stream
		if st, err = js.Stream(ctx, name); err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("stream %s: no info with a leader: %v", name, err)
	return nil
}

// requireReplicated fails the test unless the three streams have n
// replicas, a leader and n-1 followers.
func requireReplicated(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for _, name := range []string{"CHAT_IN", "CHAT_FLUSHED", "CHAT_DEAD"} {
		info := streamInfo(t, js, name)
		if info.Config.Replicas != n || len(info.Cluster.Replicas) != n-1 {
			t.Fatalf("stream %s: %d replicas configured, leader %s and %d others: want %d replicas", name,
				info.Config.Replicas, info.Cluster.Leader, len(info.Cluster.Replicas), n)
		}
	}
}

// consumerLeader returns the server leading the workers' consumer on CHAT_IN.
func consumerLeader(js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, "CHAT_IN", stream.DefaultConsumer)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	info, err := c.Info(ctx)
	if err != nil || info.Cluster == nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	return info.Cluster.Leader
}

// consumedSamples is the workers' chatbuf_messages_consumed_total over
// time, sampled every 250ms until stopped.
type consumedSamples struct {
	mu   sync.Mutex
	at   []time.Time
	sum  []float64
	stop chan struct{}
}

func sampleConsumed(ws []*workerProc) *consumedSamples {
	c := &consumedSamples{stop: make(chan struct{})}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			var sum float64
			for _, w := range ws {
				if v := w.metric("chatbuf_messages_consumed_total"); v > 0 {
					sum += v
				}
			}
			c.mu.Lock()
			c.at, c.sum = append(c.at, time.Now()), append(c.sum, sum)
			c.mu.Unlock()
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
		}
	}()
	return c
}

// longestStall stops sampling and returns the longest time after from
// during which the workers consumed nothing, up to their last progress.
func (c *consumedSamples) longestStall(from time.Time) time.Duration {
	close(c.stop)
	c.mu.Lock()
	defer c.mu.Unlock()
	var longest time.Duration
	last := from
	for i := 1; i < len(c.at); i++ {
		if c.sum[i] > c.sum[i-1] {
			if c.at[i-1].After(last) {
				longest = max(longest, c.at[i-1].Sub(last))
			}
			last = c.at[i]
		}
	}
	return longest
}

// TestNATSClusterEmbeddedEndToEnd: the same three-node JetStream cluster
// with the current nats-server (embedded in the test process), streams
// replicated three times, three workers: exactly once.
func TestNATSClusterEmbeddedEndToEnd(t *testing.T) {
	start := time.Now()
	nc := natstest.StartClusterEmbedded(t, 3)
	r := redistest.Start(t)
	s := newClusterSystem(t, nc.URL(), nc.Version, "REDIS_HOST=127.0.0.1", "REDIS_PORT="+itoa(r.Port), "CHAT_STREAM_REPLICAS=3")
	s.redis = r
	t.Logf("nats-server %s (embedded) cluster %s ready in %v; redis on %s", nc.Version, nc.URL(), time.Since(start).Round(time.Millisecond), r.Addr)
	ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}
	js, err := jetstream.New(nc.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	requireReplicated(t, js, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start = time.Now()
	res := s.load(ctx, "--conversations", "300", "--messages", "10000", "--hostile", "--verify-timeout", "2m")
	s.checkExactlyOnce(t, res.Report, 10000)
	t.Logf("%.1fs; %d batches %v, out of order %d, latency %s", time.Since(start).Seconds(),
		res.Report.Batches, res.Report.BatchesByReason, res.Report.OutOfOrder, res.Report.Latency)
	logRow(t, "nats cluster R3 ("+nc.Version+", embedded): no fault", res.Report)
	requireAlive(t, ws)
	stopAll(t, ws)
}
