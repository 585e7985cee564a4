package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/procs"
)

// aofModes are the values --aof takes: the redis-server configurations a
// sitting measures the Redis-side rows on, "off" for no persistence at all.
var aofModes = []string{"off", "everysec", "always"}

// redisConfig is one redis-server configuration of the sitting.
type redisConfig struct {
	AOF   string   `json:"aof"`   // off, everysec or always
	Flags []string `json:"flags"` // the persistence flags
}

func newRedisConfig(aof string) redisConfig {
	if aof == "off" {
		return redisConfig{AOF: aof, Flags: []string{"--save", "", "--appendonly", "no"}}
	}
	return redisConfig{AOF: aof, Flags: []string{"--save", "", "--appendonly", "yes", "--appendfsync", aof}}
}

// Label names the configuration in the tables.
func (c redisConfig) Label() string {
	if c.AOF == "off" {
		return "AOF off"
	}
	return "AOF " + c.AOF
}

// flagString is the flags as a command line would show them.
func (c redisConfig) flagString() string {
	var parts []string
	for _, f := range c.Flags {
		if f == "" {
			f = `""`
		}
		parts = append(parts, f)
	}
	return strings.Join(parts, " ")
}

// redisServer is one private redis-server of the sitting.
type redisServer struct {
	cfg     redisConfig
	p       *procs.Proc
	port    int
	addr    string
	version string
	rdb     *redis.Client
	writes  map[string]bool // the commands COMMAND INFO flags "write"
}

func startRedis(ctx context.Context, ps *procs.Group, dir string, cfg redisConfig) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found in PATH (make deps installs it): %w", err)
	}
	ver, err := procs.Version(ctx, bin)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := procs.FreePort()
		if err != nil {
			return nil, err
		}
		args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--protected-mode", "no", "--daemonize", "no"}, cfg.Flags...)
		p, err := ps.Start("redis-server ("+cfg.Label()+")", filepath.Join(dir, "redis.log"), nil, bin, args...)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		if lastErr = procs.WaitFor(ctx, p, 10*time.Second, func() error { return rdb.Ping(ctx).Err() }); lastErr == nil {
			r := &redisServer{cfg: cfg, p: p, port: port, addr: addr, version: ver, rdb: rdb}
			if r.writes, lastErr = writeCommands(ctx, rdb); lastErr == nil {
				return r, nil
			}
		}
		rdb.Close()
		p.Stop(time.Second)
	}
	return nil, fmt.Errorf("redis-server (%s) did not come up: %w", cfg.Label(), lastErr)
}

// writeCommands are the names of the commands the server flags "write".
func writeCommands(ctx context.Context, rdb *redis.Client) (map[string]bool, error) {
	cmds, err := rdb.Command(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redis COMMAND: %w", err)
	}
	out := map[string]bool{}
	for name, c := range cmds {
		if slices.Contains(c.Flags, "write") {
			out[strings.ToLower(name)] = true
		}
	}
	if !out["rpush"] {
		return nil, fmt.Errorf("redis COMMAND: RPUSH not flagged as a write (%d commands)", len(cmds))
	}
	return out, nil
}

// flush empties the server between measurements. With the append-only
// file on, it also rewrites the file (now of an empty data set) and waits
// for that, so that every measurement starts from a small file and no
// rewrite of the previous one runs into it.
func (r *redisServer) flush(ctx context.Context) error {
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	if r.cfg.AOF == "off" {
		return nil
	}
	// A rewrite already under way makes BGREWRITEAOF schedule another.
	if err := r.rdb.BgRewriteAOF(ctx).Err(); err != nil {
		return fmt.Errorf("redis BGREWRITEAOF: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info, err := r.info(ctx, "persistence")
		if err != nil {
			return err
		}
		if info["aof_rewrite_in_progress"] == "0" && info["aof_rewrite_scheduled"] == "0" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis: AOF rewrite still running after 2m (%s)", r.cfg.Label())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// info returns the fields of one INFO section.
func (r *redisServer) info(ctx context.Context, section string) (map[string]string, error) {
	text, err := r.rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("redis INFO %s: %w", section, err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// usedMiB is the server's used_memory.
func (r *redisServer) usedMiB(ctx context.Context) float64 {
	info, err := r.info(ctx, "memory")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseFloat(info["used_memory"], 64)
	return n / (1 << 20)
}

func (r *redisServer) close() {
	if r != nil {
		r.rdb.Close()
		r.p.Stop(5 * time.Second)
	}
}

// aofState is what INFO persistence says of the append-only file.
type aofState struct {
	size, rewrites, delayedFsync float64
}

func (r *redisServer) aofState(ctx context.Context) (aofState, error) {
	if r.cfg.AOF == "off" {
		return aofState{}, nil
	}
	info, err := r.info(ctx, "persistence")
	if err != nil {
		return aofState{}, err
	}
	f := func(k string) float64 { v, _ := strconv.ParseFloat(info[k], 64); return v }
	return aofState{size: f("aof_current_size"), rewrites: f("aof_rewrites"), delayedFsync: f("aof_delayed_fsync")}, nil
}

// aofCost is what a measurement added to the append-only file.
type aofCost struct {
	// BytesPerMsg is the file's growth per message, summed over samples
	// every 50 ms; the intervals in which a rewrite ended (it replaces the
	// file) are left out, so it is a slight undercount when Rewrites > 0.
	BytesPerMsg  float64 `json:"aof_bytes_per_msg"`
	Rewrites     float64 `json:"aof_rewrites"`
	DelayedFsync float64 `json:"aof_delayed_fsync"` // fsyncs the disk held up (everysec)
}

// aofMeter follows the append-only file through a measurement.
type aofMeter struct {
	r           *redisServer
	first, last aofState
	grown       float64
	err         error
	stop        context.CancelFunc
	done        chan struct{}
}

// meterAOF starts sampling the append-only file every 50 ms (nothing when
// the configuration has none).
func (r *redisServer) meterAOF(ctx context.Context) (*aofMeter, error) {
	s, err := r.aofState(ctx)
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(ctx)
	m := &aofMeter{r: r, first: s, last: s, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if r.cfg.AOF == "off" {
			return
		}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-mctx.Done():
				return
			case <-t.C:
			}
			s, err := r.aofState(mctx)
			if err != nil {
				if mctx.Err() == nil && m.err == nil {
					m.err = err
				}
				continue
			}
			m.sample(s)
		}
	}()
	return m, nil
}

func (m *aofMeter) sample(s aofState) {
	if s.rewrites == m.last.rewrites && s.size >= m.last.size {
		m.grown += s.size - m.last.size
	}
	m.last = s
}

// finish stops the sampling, takes a last sample and returns the cost per
// message of msgs.
func (m *aofMeter) finish(ctx context.Context, msgs float64) (aofCost, error) {
	m.stop()
	<-m.done
	if m.err != nil {
		return aofCost{}, m.err
	}
	s, err := m.r.aofState(ctx)
	if err != nil {
		return aofCost{}, err
	}
	m.sample(s)
	return aofCost{BytesPerMsg: m.grown / msgs, Rewrites: s.rewrites - m.first.rewrites, DelayedFsync: s.delayedFsync - m.first.delayedFsync}, nil
}

// cmdCost is one command's share of Redis's work in a measurement, from
// INFO commandstats. The time of EVAL/EVALSHA includes the commands its
// scripts ran, which are also counted under their own names.
type cmdCost struct {
	Command     string  `json:"command"`
	CallsPerMsg float64 `json:"calls_per_msg"`
	USPerMsg    float64 `json:"us_per_msg"`
	USPerCall   float64 `json:"us_per_call"`
	Write       bool    `json:"write,omitempty"` // a write command: each call is appended to the AOF
}

// writesPerMsg sums the calls of the write commands: the writes a message
// costs, the scripts' included, each of which the append-only file records.
func writesPerMsg(costs []cmdCost) float64 {
	var n float64
	for _, c := range costs {
		if c.Write {
			n += c.CallsPerMsg
		}
	}
	return n
}

// resetStats zeroes the server's command statistics.
func (r *redisServer) resetStats(ctx context.Context) error {
	return r.rdb.ConfigResetStat(ctx).Err()
}

// commandCosts reads the command statistics since resetStats, per message
// of msgs, the costliest first; the bench's own INFO and CONFIG calls are
// left out.
func (r *redisServer) commandCosts(ctx context.Context, msgs float64) ([]cmdCost, error) {
	info, err := r.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("redis INFO commandstats: %w", err)
	}
	var out []cmdCost
	for line := range strings.SplitSeq(info, "\n") {
		// cmdstat_rpush:calls=3,usec=5,usec_per_call=1.67,rejected_calls=0,failed_calls=0
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || strings.HasPrefix(name, "info") || strings.HasPrefix(name, "config") {
			continue
		}
		var calls, usec float64
		for f := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseFloat(v, 64)
			case "usec":
				usec, _ = strconv.ParseFloat(v, 64)
			}
		}
		if calls == 0 {
			continue
		}
		base, _, _ := strings.Cut(name, "|") // a subcommand: client|setname
		out = append(out, cmdCost{Command: name, CallsPerMsg: calls / msgs, USPerMsg: usec / msgs, USPerCall: usec / calls, Write: r.writes[base]})
	}
	slices.SortFunc(out, func(a, b cmdCost) int { return cmp.Compare(b.USPerMsg, a.USPerMsg) })
	return out, nil
}
