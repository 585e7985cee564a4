package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/opencontext/chatbuf/verify"
)

// --- per-round results ---

type jsRefResult struct {
	Rate          float64 `json:"msgs_per_s"`
	ElapsedS      float64 `json:"elapsed_s"`
	PreloadRate   float64 `json:"preload_msgs_per_s"`
	NATSCPUus     float64 `json:"nats_cpu_us_per_msg"`
	ConsumerCPUus float64 `json:"consumer_cpu_us_per_msg"`
	MaxAckPending int     `json:"max_ack_pending"` // of the consumer, as the server has it
	PullMax       int     `json:"pull_max_messages"`
}

type bufferResult struct {
	Rate             float64   `json:"msgs_per_s"`
	ElapsedS         float64   `json:"elapsed_s"`
	RoundTripsPerMsg float64   `json:"redis_round_trips_per_msg"`
	CommandsPerMsg   float64   `json:"redis_commands_per_msg"`
	WritesPerMsg     float64   `json:"redis_writes_per_msg"` // write commands, the scripts' included
	AOF              aofCost   `json:"aof"`
	RedisCPUus       float64   `json:"redis_cpu_us_per_msg"`
	ClientCPUus      float64   `json:"client_cpu_us_per_msg"`
	RedisCommands    []cmdCost `json:"redis_commands,omitempty"` // of the first round
}

type drainResult struct {
	Rate             float64            `json:"msgs_per_s"`
	ElapsedS         float64            `json:"elapsed_s"`
	AllAppendedS     float64            `json:"all_appended_after_s"` // 0: not all appended when the drain ended
	AppendRate       float64            `json:"appended_per_s"`       // messages appended per second until all were
	Complete         bool               `json:"complete"`             // every message in a batch (else ended by the time box)
	PreloadRate      float64            `json:"preload_msgs_per_s"`
	FlushMeanMS      float64            `json:"flush_mean_ms"` // chatbuf_flush_duration_seconds: claim, publish, commit
	RoundTripsPerMsg float64            `json:"redis_round_trips_per_msg"`
	CommandsPerMsg   float64            `json:"redis_commands_per_msg"`
	WritesPerMsg     float64            `json:"redis_writes_per_msg"` // write commands, the scripts' included
	AOF              aofCost            `json:"aof"`
	MaxAckPending    int                `json:"max_ack_pending"` // of the consumer after the drain
	WorkerCPUus      float64            `json:"worker_cpu_us_per_msg"`
	RedisCPUus       float64            `json:"redis_cpu_us_per_msg"`
	NATSCPUus        float64            `json:"nats_cpu_us_per_msg"`
	WorkerPeakRSSMiB float64            `json:"worker_peak_rss_mib"`
	RedisUsedMiB     float64            `json:"redis_used_mib_after"`
	Appended         float64            `json:"appended"`
	Duplicates       float64            `json:"deduplicated"`
	Dead             float64            `json:"dead_lettered"`
	InBatches        float64            `json:"in_batches"`
	Batches          map[string]float64 `json:"batches_by_reason"`
	RedisCommands    []cmdCost          `json:"redis_commands,omitempty"` // of the first round
}

type steadyResult struct {
	Rate                float64        `json:"target_msgs_per_s"`
	PublishedRate       float64        `json:"published_msgs_per_s"`
	DurationS           float64        `json:"duration_s"`
	Published           int            `json:"published"`
	PublishErrors       int            `json:"publish_errors"`
	SizeLatency         verify.Latency `json:"size_latency"`
	Latency             verify.Latency `json:"latency"`
	PubAck              verify.Latency `json:"puback_latency"`
	WorkerCPUPercent    float64        `json:"worker_cpu_percent"`
	PublisherCPUPercent float64        `json:"publisher_cpu_percent"` // the harness process while publishing
	FlushMeanMS         float64        `json:"flush_mean_ms"`
	BacklogS            float64        `json:"backlog_s"` // after the last PubAck, until the worker had appended every message
	RoundTripsPerMsg    float64        `json:"redis_round_trips_per_msg"`
	Lost                int            `json:"lost"`
	Duplicated          int            `json:"duplicated"`
	Misplaced           int            `json:"misplaced"`
	Malformed           int            `json:"malformed"`
	VerifyOK            bool           `json:"verify_ok"`
}

// Row is one measured figure: its rounds and their median.
type Row[T any] struct {
	Name          string            `json:"name"`
	NATS          *natsBinary       `json:"nats_server,omitempty"`
	Redis         string            `json:"redis_server,omitempty"` // its configuration's label: AOF off, AOF everysec
	Conversations int               `json:"conversations,omitempty"`
	Messages      int               `json:"messages,omitempty"`
	Env           map[string]string `json:"worker_env,omitempty"`
	Notes         []string          `json:"notes,omitempty"`
	Rounds        []T               `json:"rounds"`
	Median        T                 `json:"median"`
	Ratio         float64           `json:"ratio,omitempty"`    // to RatioTo, in the same sitting
	RatioTo       string            `json:"ratio_to,omitempty"` // the reference of Ratio
	Relative      float64           `json:"relative,omitempty"` // to another chatbuf figure, RelativeTo
	RelativeTo    string            `json:"relative_to,omitempty"`
	Error         string            `json:"error,omitempty"`
}

func (r *Row[T]) ok() bool { return r != nil && r.Error == "" && len(r.Rounds) > 0 }

// finish sets Median from the rounds.
func (r *Row[T]) finish() { r.Median = medianOf(r.Rounds) }

// Target is one goal, checked against a measured ratio or figure.
type Target struct {
	Goal     string  `json:"goal"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	AtMost   bool    `json:"at_most"` // the value must be <= limit (else >=)
	Pass     bool    `json:"pass"`
	Skipped  string  `json:"skipped,omitempty"`
}

func (t *Target) check() {
	if t.AtMost {
		t.Pass = t.Value <= t.Limit
	} else {
		t.Pass = t.Value >= t.Limit
	}
}

func (t Target) mark() string {
	switch {
	case t.Skipped != "":
		return "– skipped"
	case t.Pass:
		return "✓ pass"
	default:
		return "✗ miss"
	}
}

// Results is everything one sitting measured; it is written as JSON.
type Results struct {
	Mode      string    `json:"mode"` // full or smoke
	Started   time.Time `json:"started"`
	DurationS float64   `json:"duration_s"`
	Rounds    int       `json:"rounds"`
	Command   string    `json:"command"`
	Host      struct {
		CPUs      int     `json:"cpus"`
		CPU       string  `json:"cpu"`
		Kernel    string  `json:"kernel"`
		Go        string  `json:"go"`
		LoadStart float64 `json:"load_avg_start"`
		LoadEnd   float64 `json:"load_avg_end"`
	} `json:"host"`
	Redis struct {
		Version string        `json:"version"`
		Configs []redisConfig `json:"configs"` // one redis-server each, the first for the phases that run on one
	} `json:"redis_server"`
	NATS   []*natsBinary `json:"nats_servers"`
	Corpus *corpusInfo   `json:"corpus,omitempty"` // what --corpus added to the drain

	RedisRef []*Row[float64]      `json:"ref_redis_benchmark_rpush"` // one per Redis configuration
	JSRef    []*Row[jsRefResult]  `json:"ref_jetstream_consume_ack"`
	Buffer   []*Row[bufferResult] `json:"buffer_layer"`
	Drain    []*Row[drainResult]  `json:"drain"`
	Baseline []*Row[drainResult]  `json:"baseline"`
	Steady   *Row[steadyResult]   `json:"steady_state,omitempty"`
	HTTP     *Row[httpResult]     `json:"http_ingest,omitempty"`
	Growth   []*Row[drainResult]  `json:"growth"`
	// GrowthAge is a drain of one message per conversation, flushed by age.
	GrowthAge *Row[drainResult] `json:"growth_age,omitempty"`
	Targets   []Target          `json:"targets"`
	Notes     []string          `json:"notes"`
	Errors    []string          `json:"errors,omitempty"`

	growthTable []*Row[drainResult] // the growth rows and the drain, by conversations
}

// corpusInfo is what --corpus added to the drain's load.
type corpusInfo struct {
	Messages      int      `json:"messages"`
	Conversations int      `json:"conversations"`
	Skipped       []string `json:"skipped,omitempty"` // conversations whose ids no subject of this build names
}

// --- medians ---

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf returns a T whose every number is the median of that number over
// the rounds (each figure on its own), whose booleans are true only if true
// in every round, and whose other fields come from the first round.
func medianOf[T any](rounds []T) T {
	var out T
	if len(rounds) == 0 {
		return out
	}
	vals := make([]reflect.Value, len(rounds))
	for i := range rounds {
		vals[i] = reflect.ValueOf(&rounds[i]).Elem()
	}
	medianInto(reflect.ValueOf(&out).Elem(), vals)
	return out
}

func medianInto(dst reflect.Value, src []reflect.Value) {
	switch dst.Kind() {
	case reflect.Float64:
		v := make([]float64, len(src))
		for i, s := range src {
			v[i] = s.Float()
		}
		dst.SetFloat(median(v))
	case reflect.Int:
		v := make([]float64, len(src))
		for i, s := range src {
			v[i] = float64(s.Int())
		}
		dst.SetInt(int64(math.Round(median(v))))
	case reflect.Bool:
		all := true
		for _, s := range src {
			all = all && s.Bool()
		}
		dst.SetBool(all)
	case reflect.Struct:
		for f := range dst.NumField() {
			fs := make([]reflect.Value, len(src))
			for i, s := range src {
				fs[i] = s.Field(f)
			}
			medianInto(dst.Field(f), fs)
		}
	default:
		dst.Set(src[0])
	}
}

// spread is "min–max" of one figure over the rounds.
func spread[T any](rounds []T, f func(T) float64, format func(float64) string) string {
	if len(rounds) < 2 {
		return "–"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rounds {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	return format(lo) + "–" + format(hi)
}

// write stores the results as <prefix>latest.{md,json} and a dated copy.
func (r *Results) write(dir, prefix string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	md := []byte(r.markdown())
	stamp := r.Started.UTC().Format("2006-01-02T150405Z")
	var files []string
	for _, f := range []struct {
		name string
		data []byte
	}{
		{prefix + "latest.md", md}, {prefix + "latest.json", append(js, '\n')},
		{prefix + stamp + ".md", md}, {prefix + stamp + ".json", append(js, '\n')},
	} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}
