// Package completion caches completion suggestions per user, with the
// eviction strategies of the original OpenContext completion cache done
// right: lru, ttl and hybrid, hot-key protection, shared statistics,
// precomputed document contexts and invalidation by key or prefix.
//
// Redis is the shared implementation (one Lua script per operation, every
// operation O(log n) in the user's entries, no KEYS and no SCAN); Memory has
// the same semantics for a single process without Redis. Both pass one
// conformance suite.
//
// Every user has a cache of their own: MaxSize bounds each user's entries,
// and one user's entries are never served to another.
package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

var (
	// ErrMiss: no live entry for the key (absent, expired, evicted, or
	// stored for another context hash).
	ErrMiss = errors.New("completion: miss")
	// ErrInvalid: a bad argument or configuration.
	ErrInvalid = errors.New("completion: invalid argument")
)

// Suggestion is one completion suggestion. It round-trips through JSON
// losslessly: Metadata values are kept as raw JSON, numbers included.
type Suggestion struct {
	Text        string                     `json:"text"`
	Kind        string                     `json:"kind,omitempty"` // e.g. "semantic_continuation", "template"
	Score       float64                    `json:"score"`          // the suggestion's own confidence
	ContextUsed []string                   `json:"context_used,omitempty"`
	Metadata    map[string]json.RawMessage `json:"metadata,omitempty"`
}

// Stats are the cache's counters, shared by every instance on one Redis.
type Stats struct {
	TotalRequests int64   `json:"total_requests"`
	Hits          int64   `json:"hits"`
	Misses        int64   `json:"misses"`
	Evictions     int64   `json:"evictions"`
	HitRate       float64 `json:"hit_rate"` // hits / total_requests, 0 when idle
}

func (s *Stats) computeHitRate() {
	if s.TotalRequests > 0 {
		s.HitRate = float64(s.Hits) / float64(s.TotalRequests)
	}
}

// Strategy is the eviction strategy.
type Strategy string

const (
	// StrategyLRU evicts the least recently used entries beyond MaxSize;
	// entries never expire.
	StrategyLRU Strategy = "lru"
	// StrategyTTL expires entries TTL after they were put and, beyond
	// MaxSize, evicts the entries of lowest confidence.
	StrategyTTL Strategy = "ttl"
	// StrategyHybrid expires entries after TTL and evicts the least recently
	// used beyond MaxSize.
	StrategyHybrid Strategy = "hybrid"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxSize        = 1000
	DefaultTTL            = 300 * time.Second
	DefaultStrategy       = StrategyHybrid
	DefaultHotThreshold   = 5
	DefaultPrecomputedTTL = time.Hour
	DefaultPrefix         = "opencontext:"
)

// maxHotSpares bounds how many hot keys one Put may spare while evicting,
// so that eviction always ends.
const maxHotSpares = 8

// Config tunes a cache. Every zero field means its documented default.
type Config struct {
	// MaxSize is the most entries one user may have. Default 1000.
	MaxSize int
	// TTL is how long an entry lives after Put (ttl and hybrid strategies;
	// lru entries never expire). Default 300s.
	TTL time.Duration
	// Strategy is lru, ttl or hybrid. Default hybrid.
	Strategy Strategy
	// HotThreshold: a key read more than this many times survives one
	// eviction round. Default 5.
	HotThreshold int
	// PrecomputedTTL is how long a precomputed context lives. Default 1h.
	PrecomputedTTL time.Duration
	// Prefix is put in front of every Redis key. Default "opencontext:".
	Prefix string
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxSize < 0 || c.TTL < 0 || c.HotThreshold < 0 || c.PrecomputedTTL < 0 {
		return c, fmt.Errorf("%w: negative MaxSize, TTL, HotThreshold or PrecomputedTTL", ErrInvalid)
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Millisecond {
		return c, fmt.Errorf("%w: TTL %v is below a millisecond", ErrInvalid, c.TTL)
	}
	if c.PrecomputedTTL == 0 {
		c.PrecomputedTTL = DefaultPrecomputedTTL
	}
	if c.PrecomputedTTL < time.Millisecond {
		return c, fmt.Errorf("%w: PrecomputedTTL %v is below a millisecond", ErrInvalid, c.PrecomputedTTL)
	}
	if c.HotThreshold == 0 {
		c.HotThreshold = DefaultHotThreshold
	}
	switch c.Strategy {
	case "":
		c.Strategy = DefaultStrategy
	case StrategyLRU, StrategyTTL, StrategyHybrid:
	default:
		return c, fmt.Errorf("%w: unknown strategy %q (want lru, ttl or hybrid)", ErrInvalid, c.Strategy)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return c, fmt.Errorf("%w: prefix %q must not contain { or } (they would break the per-user hash tag)", ErrInvalid, c.Prefix)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// entryTTL is how long an entry lives; 0 means forever (lru).
func (c Config) entryTTL() time.Duration {
	if c.Strategy == StrategyLRU {
		return 0
	}
	return c.TTL
}

// Cache is implemented by Redis and Memory.
type Cache interface {
	// Get returns the suggestions stored for user's key, or ErrMiss. A
	// non-empty contextHash must equal the one given to Put.
	Get(ctx context.Context, user, key, contextHash string) ([]Suggestion, error)
	// Put stores suggestions for user's key and evicts beyond MaxSize. The
	// entry just put is never the one evicted.
	Put(ctx context.Context, user, key string, suggestions []Suggestion, contextHash string, confidence float64) error
	// Invalidate removes user's key; it returns how many entries it removed.
	Invalidate(ctx context.Context, user, key string) (int, error)
	// InvalidatePrefix removes user's keys that start with prefix (taken
	// literally: no glob); "" removes all of user's entries.
	InvalidatePrefix(ctx context.Context, user, prefix string) (int, error)
	// PutPrecomputed stores a precomputed context (any JSON value) for
	// user's document, for PrecomputedTTL.
	PutPrecomputed(ctx context.Context, user, docID string, value json.RawMessage) error
	// GetPrecomputed returns it, or ErrMiss.
	GetPrecomputed(ctx context.Context, user, docID string) (json.RawMessage, error)
	// Stats returns the shared counters.
	Stats(ctx context.Context) (Stats, error)
}

func checkIDs(names []string, values ...string) error {
	for i, v := range values {
		if v == "" {
			return fmt.Errorf("%w: empty %s", ErrInvalid, names[i])
		}
	}
	return nil
}

var (
	userKey = []string{"user", "key"}
	userDoc = []string{"user", "doc_id"}
)

// encodePut validates a Put and encodes its suggestions.
func encodePut(user, key string, suggestions []Suggestion, confidence float64) (string, error) {
	if err := checkIDs(userKey, user, key); err != nil {
		return "", err
	}
	if math.IsNaN(confidence) || math.IsInf(confidence, 0) {
		return "", fmt.Errorf("%w: confidence %v is not finite", ErrInvalid, confidence)
	}
	if suggestions == nil {
		suggestions = []Suggestion{}
	}
	b, err := json.Marshal(suggestions)
	if err != nil {
		return "", fmt.Errorf("%w: encode suggestions: %w", ErrInvalid, err)
	}
	return string(b), nil
}

func decodeSuggestions(s string) ([]Suggestion, error) {
	var out []Suggestion
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("completion: decode stored suggestions: %w", err)
	}
	return out, nil
}

func checkPrecomputed(user, docID string, value json.RawMessage) error {
	if err := checkIDs(userDoc, user, docID); err != nil {
		return err
	}
	if !json.Valid(value) {
		return fmt.Errorf("%w: precomputed value is not valid JSON", ErrInvalid)
	}
	return nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }
