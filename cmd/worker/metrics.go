package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// metrics wires the packages' hooks to Prometheus.
type metrics struct {
	reg        *prometheus.Registry
	consumed   prometheus.Counter
	appended   prometheus.Counter
	duplicates prometheus.Counter
	dead       *prometheus.CounterVec
	batches    *prometheus.CounterVec
	batchMsgs  *prometheus.CounterVec
	flushTime  prometheus.Histogram
	delivered  *prometheus.HistogramVec
	errors     *prometheus.CounterVec
	ready      prometheus.Gauge
	mode       *prometheus.GaugeVec
	roundTrips prometheus.Counter
	commands   prometheus.Counter
	refused    *prometheus.CounterVec
	rejected   prometheus.Counter
	refusals   *prometheus.CounterVec
	refusing   prometheus.Gauge
}

// redisHook counts Redis round trips and commands (a pipeline is one round
// trip of many commands).
func (m *metrics) redisHook() redis.Hook { return roundTripHook{m} }

type roundTripHook struct{ m *metrics }

func (h roundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h roundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.m.roundTrips.Inc()
		h.m.commands.Inc()
		return next(ctx, cmd)
	}
}

func (h roundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.m.roundTrips.Inc()
		h.m.commands.Add(float64(len(cmds)))
		return next(ctx, cmds)
	}
}

// setMode records where appends go: "shared" or "local".
func (m *metrics) setMode(mode string) {
	for _, x := range []string{"shared", "local"} {
		m.mode.WithLabelValues(x).Set(boolFloat(x == mode))
	}
}

// registerOldestRefused exports the age of the oldest in-flight batch whose
// publishing failed in one of flushers (kept in process memory: cheap).
func (m *metrics) registerOldestRefused(flushers []*flush.Flusher, now func() time.Time) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "chatbuf", Name: "oldest_unpublished_batch_age_seconds",
		Help: "Age of the oldest claimed batch that CHAT_FLUSHED refused and that is not published yet (0 when none)."}, func() float64 {
		var oldest time.Time
		for _, f := range flushers {
			if t, ok := f.OldestRefused(); ok && (oldest.IsZero() || t.Before(oldest)) {
				oldest = t
			}
		}
		if oldest.IsZero() {
			return 0
		}
		return now().Sub(oldest).Seconds()
	}))
}

// registerOldest exports the age of the oldest pending message, read at
// most once per backlogEvery (scrapes in between reuse the last reading).
func (m *metrics) registerOldest(oldest func(context.Context) (time.Time, bool, error), now func() time.Time) {
	var c cached[time.Time]
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "chatbuf", Name: "oldest_buffer_age_seconds",
		Help: "Age of the oldest buffered or in-flight message (0 when none); read at most every 5s."}, func() float64 {
		t, ok := c.get(now(), func() (time.Time, bool) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			t, ok, err := oldest(ctx)
			return t, err == nil && ok
		})
		if !ok || t.IsZero() {
			return 0
		}
		return now().Sub(t).Seconds()
	}))
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "chatbuf", Name: name, Help: help}
	}
	m := &metrics{
		reg:        reg,
		consumed:   prometheus.NewCounter(prometheus.CounterOpts(f("messages_consumed_total", "Messages received from CHAT_IN, including redeliveries."))),
		appended:   prometheus.NewCounter(prometheus.CounterOpts(f("messages_appended_total", "Messages appended to a buffer."))),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts(f("messages_deduplicated_total", "Messages skipped as already seen within the dedupe window."))),
		dead:       prometheus.NewCounterVec(prometheus.CounterOpts(f("messages_dead_total", "Messages dead-lettered, by reason.")), []string{"reason"}),
		batches:    prometheus.NewCounterVec(prometheus.CounterOpts(f("batches_total", "Batches published to CHAT_FLUSHED, by reason.")), []string{"reason"}),
		batchMsgs:  prometheus.NewCounterVec(prometheus.CounterOpts(f("batch_messages_total", "Messages published in batches, by reason.")), []string{"reason"}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "chatbuf", Name: "flush_duration_seconds",
			Help:    "Time to claim, publish and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		delivered: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "chatbuf", Name: "publish_to_batch_seconds",
			Help:    "Time from a message's publish (CHAT_IN's stored time) to the PubAck of the batch that carries it, per message, by batch reason.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 18),
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts(f("errors_total", "Errors talking to Redis (store) or NATS, by component.")), []string{"component"}),
		ready:  prometheus.NewGauge(prometheus.GaugeOpts(f("ready", "1 while the worker can consume and append."))),
	}
	m.roundTrips = prometheus.NewCounter(prometheus.CounterOpts(f("redis_round_trips_total", "Round trips to Redis (a pipeline counts once).")))
	m.commands = prometheus.NewCounter(prometheus.CounterOpts(f("redis_commands_total", "Commands sent to Redis, scripts included.")))
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts(f("batch_publish_failures_total",
		"Batch publishes CHAT_FLUSHED refused or did not answer, by kind (full, too_large, limits, permission, unavailable, timeout, other); each is retried with backoff.")), []string{"kind"})
	m.rejected = prometheus.NewCounter(prometheus.CounterOpts(f("batches_rejected_total",
		"Batches dead-lettered whole (batch_rejected) after CHAT_FLUSHED refused them for CHAT_BATCH_REJECT_AFTER.")))
	m.mode = prometheus.NewGaugeVec(prometheus.GaugeOpts(f("store_mode", "1 for the store appends go to: shared (Redis) or local (process memory).")), []string{"mode"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts(f("store_refusals_total",
		"Appends Redis refused as a whole (not for one conversation), by kind: oom, noperm, readonly, masterdown, loading, busy, clusterdown, tryagain, noreplicas, noscript, misconf, noauth, not_replicated, unreachable, other.")), []string{"kind"})
	m.refusing = prometheus.NewGauge(prometheus.GaugeOpts(f("store_refusing", "1 while Redis refuses appends as a whole: the worker pulls nothing new and is not ready.")))
	for _, k := range []string{"oom", "noperm", "readonly", "masterdown", "loading", "busy", "clusterdown", "tryagain",
		"noreplicas", "noscript", "misconf", "noauth", "not_replicated", "unreachable", "other"} {
		m.refusals.WithLabelValues(k)
	}
	reg.MustRegister(m.consumed, m.appended, m.duplicates, m.dead, m.batches, m.batchMsgs, m.flushTime, m.delivered, m.errors, m.ready, m.mode, m.roundTrips, m.commands, m.refused, m.rejected,
		m.refusals, m.refusing,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every label set the dashboard and the alerts use exists from the
	// start, so that rate() sees the first event.
	for _, r := range deadReasons {
		m.dead.WithLabelValues(r)
	}
	for _, r := range batchReasons {
		m.batches.WithLabelValues(r)
		m.batchMsgs.WithLabelValues(r)
		m.delivered.WithLabelValues(r)
	}
	for _, c := range errorComponents {
		m.errors.WithLabelValues(c)
	}
	m.setMode("shared")
	for _, k := range []string{flush.KindFull, flush.KindTooLarge, flush.KindLimits, flush.KindPermission, flush.KindUnavailable, flush.KindTimeout, flush.KindOther} {
		m.refused.WithLabelValues(k)
	}
	return m
}

// Label values initialised at start: the contract's dead-letter reasons,
// batch reasons, and the components errors are counted for.
var (
	deadReasons = []string{string(chat.ReasonTooLarge), string(chat.ReasonBadID), string(chat.ReasonBadJSON),
		string(chat.ReasonInvalid), string(chat.ReasonIDMismatch), string(worker.ReasonStoreRejected), string(stream.ReasonBatchRejected)}
	batchReasons    = []string{"size", "age", "idle", "bytes", "end", "manual"}
	errorComponents = []string{"redis", "nats"}
)

func (m *metrics) workerHooks() worker.Hooks {
	return worker.Hooks{
		Consumed:      func(n int) { m.consumed.Add(float64(n)) },
		Appended:      func(n int) { m.appended.Add(float64(n)) },
		Duplicates:    func(n int) { m.duplicates.Add(float64(n)) },
		Dead:          func(r chat.Reason) { m.dead.WithLabelValues(string(r)).Inc() },
		StoreError:    func(error) { m.errors.WithLabelValues("redis").Inc() },
		NATSError:     func(error) { m.errors.WithLabelValues("nats").Inc() },
		StoreRefused:  func(kind string) { m.refusals.WithLabelValues(kind).Inc() },
		StoreRefusing: func(on bool) { m.refusing.Set(boolFloat(on)) },
	}
}

func (m *metrics) flushHooks() flush.Hooks {
	// Observed once per message: the label lookups are done here.
	delivered := map[chat.Trigger]prometheus.Observer{}
	for _, r := range batchReasons {
		delivered[chat.Trigger(r)] = m.delivered.WithLabelValues(r)
	}
	return flush.Hooks{
		Batch: func(r chat.Trigger, n int, d time.Duration) {
			m.batches.WithLabelValues(string(r)).Inc()
			m.batchMsgs.WithLabelValues(string(r)).Add(float64(n))
			m.flushTime.Observe(d.Seconds())
		},
		Delivered: func(r chat.Trigger, d time.Duration) {
			if o, ok := delivered[r]; ok {
				o.Observe(d.Seconds())
			}
		},
		Refused: func(kind string) { m.refused.WithLabelValues(kind).Inc() },
		Rejected: func(n int) {
			m.rejected.Inc()
			m.dead.WithLabelValues(string(stream.ReasonBatchRejected)).Add(float64(n))
		},
		Error: func(stage string, _ error) {
			m.errors.WithLabelValues(errorComponent(stage)).Inc()
		},
	}
}

// errorComponent is the server a flusher's error at stage came from: the
// publish, the dead letter and the lookup of what is still in CHAT_IN talk
// to NATS; claims, commits, locks and recording a refusal to Redis.
func errorComponent(stage string) string {
	switch stage {
	case "publish", "reject", "pending":
		return "nats"
	}
	return "redis"
}
