// Command worker consumes chat messages from NATS JetStream, buffers them per
// conversation in Redis, and publishes full or old buffers as batches.
// Configuration comes from the environment; see the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/completion"
	"github.com/opencontext/chatbuf/fallback"
	"github.com/opencontext/chatbuf/flush"
	shared "github.com/opencontext/chatbuf/internal/config"
	"github.com/opencontext/chatbuf/internal/tracing"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// tracerName is the instrumentation scope of chatbuf's spans.
const tracerName = "github.com/opencontext/chatbuf"

func main() {
	shared.Main("worker", loadConfig, func(c config) string { return c.LogLevel }, run)
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	traces, err := tracing.Start(ctx, cfg.otel, "chatbuf-worker")
	if err != nil {
		return err
	}
	defer traces.Close(log)
	traces.Announce(log)
	tracer := traces.Tracer(tracerName)

	natsURL := cfg.NATSURL
	if natsURL == "embedded" {
		srv, url, err := startEmbedded(cfg.NATSEmbeddedAddr, cfg.NATSEmbeddedDir, log)
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		natsURL = url
	}

	storeCfg := buffer.Config{KeyPrefix: cfg.RedisKeyPrefix, TTL: cfg.BufferTTL.D(), DedupeWindow: cfg.DedupeWindow.D(),
		WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout.D(), TrackIdle: cfg.FlushIdle > 0}
	lockCfg := locking.Config{KeyPrefix: cfg.RedisKeyPrefix, Expiry: cfg.LockTTL.D()}
	flushCfg := flush.Config{
		BatchSize:  cfg.BufferSize,
		MaxAge:     cfg.FlushMaxAge.D(),
		Idle:       cfg.FlushIdle.D(),
		LockExpiry: cfg.LockTTL.D(),
		Logger:     log,
		Tracer:     tracer,
	}
	m := newMetrics()
	redis.SetLogger(&redisLogger{log: log, interval: 10 * time.Second})
	var rdb redis.UniversalClient
	if cfg.RedisEnabled {
		c, err := newRedis(cfg)
		if err != nil {
			return err
		}
		rdb = c
		defer rdb.Close()
		rdb.AddHook(m.redisHook())
		// Addresses only: never the password.
		attrs := []any{"tls", cfg.RedisTLS, "acl_user", cfg.RedisUsername, "password", cfg.RedisPassword != "",
			"key_prefix", cfg.RedisKeyPrefix, "fallback", cfg.RedisFallback}
		if addrs := cfg.Addrs(); len(addrs) > 0 {
			log.Info("redis: using", append([]any{"mode", "cluster", "addrs", addrs}, attrs...)...)
		} else {
			log.Info("redis: using", append([]any{"mode", "single", "addr", redisAddr(cfg), "db", cfg.RedisDB}, attrs...)...)
		}
	} else {
		log.Warn("redis: disabled (REDIS_ENABLED=false): buffers live in this process's memory, single instance; " +
			"messages are acked only once published in a batch, so a crash loses nothing but dedupe memory")
	}

	natsOpts, err := cfg.natsSecurity()
	if err != nil {
		return err
	}
	limits := newBatchLimits(cfg, log)
	nc, err := connectNATS(natsURL, natsOpts, log, func(error) { m.errors.WithLabelValues("nats").Inc() },
		func(nc *nats.Conn) { limits.connected(nc.MaxPayload()) })
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	var fbMode atomic.Pointer[fallback.Buffers]
	var running atomic.Pointer[worker.Worker]
	h := &health{nc: nc, rdb: rdb, log: log, gauge: m.ready.Set, limits: limits.ready, refusal: func() error {
		if w := running.Load(); w != nil {
			return w.StoreRefusal()
		}
		return nil
	}}
	h.mode = func() string {
		if fb := fbMode.Load(); fb != nil {
			return string(fb.Mode())
		}
		return ""
	}
	probeCtx, stopProbe := context.WithCancel(context.Background())
	defer stopProbe()
	go h.probe(probeCtx)
	if cfg.MetricsAddr != "" {
		shutdownHTTP, err := serveHTTP(ctx, cfg.MetricsAddr, m, h, log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = shutdownHTTP(sctx)
		}()
	}

	// The batch ceiling comes from the server's max_payload: wait for the
	// first connection (a worker starts while NATS is down, not ready).
	if !nc.IsConnected() {
		log.Info("nats: waiting for the first connection, to learn the server's max_payload")
	}
	ceiling, err := limits.wait(ctx.Done())
	if ctx.Err() != nil {
		return nil // stopped before NATS answered
	}
	if err != nil {
		return fmt.Errorf("configuration does not fit the NATS server: %w", err)
	}
	flushCfg.MaxBatchBytes = ceiling

	streamCfg := stream.Config{
		Prefix:          cfg.SubjectPrefix,
		DuplicateWindow: cfg.DuplicateWindow.D(),
		AckWait:         cfg.AckWait.D(),
		MaxAckPending:   cfg.MaxAckPending,
		Replicas:        cfg.StreamReplicas,
		FlushedMaxAge:   cfg.FlushedMaxAge.D(),
	}.WithDefaults()
	sink := stream.NewSink(js, streamCfg)
	flushCfg.Hooks = m.flushHooks()
	flushCfg.RejectAfter = cfg.BatchRejectAfter.D()
	flushCfg.Rejecter = stream.NewDeadLetters(js, streamCfg, nc.MaxPayload)
	var flushers []*flush.Flusher
	// Batches follow CHAT_IN order across workers when the flusher knows
	// which messages are still on their way (Redis as the store). The
	// local memory (REDIS_ENABLED=false, or the fallback) holds messages
	// unacked until their batch is published, so they all stay in CHAT_IN:
	// there, one process's sorted buffer keeps the order.
	pending := stream.NewPending(js, streamCfg)
	pending.SetLogger(log)
	if v := nc.ConnectedServerVersion(); stream.HidesMessages(v) {
		log.Warn("nats: this server's file store can hide a waiting message from next_by_subj; order is kept by CHAT_IN's first stored sequence instead, at a cost in latency (README, Limits)",
			"server_version", v)
	}
	side := func(name string, store buffer.Store, locker locking.Locker) fallback.Side {
		fc := flushCfg
		if name == "redis" {
			fc.Pending = pending
		}
		fc.Logger = fc.Logger.With("store", name)
		f := flush.New(store, locker, sink, fc)
		flushers = append(flushers, f)
		return fallback.Side{Store: store, Locker: locker, Flusher: f, Sweeper: flush.NewSweeper(f, 0)}
	}
	var w *worker.Worker
	release := func(c chat.Conversation, keys []string) { w.Release(c, keys) }
	mem := buffer.NewMemory(storeCfg, buffer.MemoryConfig{Hold: true, OnRelease: release})
	local := side("memory", mem, locking.NewMemory(lockCfg))

	var (
		bufs   worker.Buffers
		oldest func(context.Context) (time.Time, bool, error)
		fb     *fallback.Buffers
	)
	switch {
	case rdb == nil:
		bufs, oldest = worker.StoreBuffers{Store: local.Store, Flusher: local.Flusher, Sweeper: local.Sweeper}, mem.Oldest
		m.setMode("local")
	case !cfg.RedisFallback:
		shared := side("redis", buffer.NewRedis(rdb, storeCfg), locking.NewRedis(rdb, lockCfg))
		bufs, oldest = worker.StoreBuffers{Store: shared.Store, Flusher: shared.Flusher, Sweeper: shared.Sweeper}, shared.Store.Oldest
		m.setMode("shared")
	default:
		shared := side("redis", buffer.NewRedis(rdb, storeCfg), locking.NewRedis(rdb, lockCfg))
		fb = fallback.New(shared, local, mem, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, fallback.Config{
			Logger: log,
			OnMode: func(mode fallback.Mode) { m.setMode(string(mode)) },
		})
		bufs, oldest = fb, fb.Oldest
		m.setMode("shared")
	}
	m.registerOldest(oldest, time.Now)
	m.registerOldestRefused(flushers, time.Now)
	if rdb != nil {
		(&backlog{rdb: rdb, keys: chat.NewKeys(cfg.RedisKeyPrefix), maxAge: cfg.FlushMaxAge.D(), now: time.Now}).register(m.reg)
	}
	if fb != nil {
		fbMode.Store(fb)
	}

	w = worker.New(nc, js, bufs, worker.Config{
		Stream:          streamCfg,
		BatchSize:       cfg.BufferSize,
		MaxMessageBytes: cfg.MaxMessageBytes,
		Concurrency:     cfg.Concurrency,
		AppendBatch:     cfg.AppendBatch,
		SweepInterval:   cfg.SweepInterval.D(),
		Logger:          log,
		Hooks:           m.workerHooks(),
		OnReady:         func() { h.streamsUp.Store(true) },
		// The rest of SHUTDOWN_TIMEOUT is for draining NATS.
		ShutdownTimeout: cfg.ShutdownTimeout.D() * 4 / 5,
		Pending:         pending,
		Tracer:          tracer,
	})
	running.Store(w)
	if cfg.CompletionEnabled {
		svc, err := startCompletion(nc, rdb, cfg, log)
		if err != nil {
			return err
		}
		defer func() { _ = svc.Stop() }()
	}
	if fb != nil {
		fbCtx, stopFB := context.WithCancel(context.Background())
		defer stopFB()
		go func() { _ = fb.Run(fbCtx) }()
	}

	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("worker: shutting down", "timeout", cfg.ShutdownTimeout.D())
	deadline := time.Now().Add(cfg.ShutdownTimeout.D())
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("shutdown took longer than SHUTDOWN_TIMEOUT=%s; unacked messages will be redelivered", cfg.ShutdownTimeout.D())
	}
	// Drain is asynchronous: acks and replies still buffered go out, then
	// the connection closes. Wait for that (deferred Close comes after).
	if err := nc.Drain(); err != nil {
		log.Warn("nats: drain", "error", err)
		return nil
	}
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			log.Warn("nats: drain not finished within SHUTDOWN_TIMEOUT; closing", "timeout", cfg.ShutdownTimeout.D())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// newRedis returns the Redis client: a Redis Cluster client seeded with
// REDIS_ADDRS when that is set, else a client of REDIS_HOST:REDIS_PORT.
func newRedis(cfg config) (redis.UniversalClient, error) { return cfg.redisConn().Client() }

func redisAddr(cfg config) string { return cfg.redisConn().Addr() }

// startCompletion serves the completion cache as the NATS micro service
// "completion", on Redis (shared by all workers) or, with Redis disabled, in
// memory.
func startCompletion(nc *nats.Conn, rdb redis.UniversalClient, cfg config, log *slog.Logger) (micro.Service, error) {
	ccfg := completion.Config{
		MaxSize:        cfg.CompletionMaxSize,
		TTL:            cfg.CompletionTTL.D(),
		Strategy:       completion.Strategy(cfg.CompletionStrategy),
		HotThreshold:   cfg.CompletionHotThreshold,
		PrecomputedTTL: cfg.CompletionPrecomputedTTL.D(),
		Prefix:         cfg.RedisKeyPrefix,
	}
	var (
		c   completion.Cache
		err error
	)
	if rdb != nil {
		c, err = completion.NewRedis(rdb, ccfg)
	} else {
		c, err = completion.NewMemory(ccfg)
	}
	if err != nil {
		return nil, fmt.Errorf("completion cache: %w", err)
	}
	svc, err := completion.NewService(nc, c, log)
	if err != nil {
		return nil, fmt.Errorf("completion service: %w", err)
	}
	log.Info("completion: serving the NATS micro service", "name", completion.ServiceName, "strategy", cfg.CompletionStrategy)
	return svc, nil
}
