package completion

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
)

// Memory is a Cache in process memory with the semantics of Redis, for a
// single instance running without Redis. Its statistics are its own.
//
// It mirrors Redis's layout: per user, sorted sets for the key index,
// access order, confidence order and expiry order. Expired entries are
// removed by the user's next Put, and a user's whole state by any Put once
// TTL has passed since that user's last Put (as Redis TTLs would).
type Memory struct {
	cfg Config

	mu     sync.Mutex
	users  map[string]*userCache
	lapses *zset // user -> last Put + TTL, ms (ttl and hybrid only)
	pre    map[string]precomputed
	preExp *zset // precomputed key -> expiry, ms
	stats  Stats
}

var _ Cache = (*Memory)(nil)

type userCache struct {
	entries    map[string]*entry // by member (escaped key)
	index      *zset             // member -> 0
	access     *zset             // member -> last access, ms
	confidence *zset             // member -> confidence
	expiry     *zset             // member -> expiry, ms
}

type entry struct {
	suggestions string // JSON
	contextHash string
	expiry      int64 // ms, 0: never
	reads       int64 // since put or since last spared
}

type precomputed struct {
	value  json.RawMessage
	expiry int64 // ms
}

// NewMemory returns an in-memory completion cache; Config as for NewRedis.
func NewMemory(cfg Config) (*Memory, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Memory{
		cfg:    cfg,
		users:  make(map[string]*userCache),
		lapses: newZset(),
		pre:    make(map[string]precomputed),
		preExp: newZset(),
	}, nil
}

func (m *Memory) Get(_ context.Context, user, key, contextHash string) ([]Suggestion, error) {
	if err := checkIDs(userKey, user, key); err != nil {
		return nil, err
	}
	now := ms(m.cfg.Now())
	member := escape(key)
	m.mu.Lock()
	m.stats.TotalRequests++
	var e *entry
	u := m.users[user]
	if u != nil {
		e = u.entries[member]
	}
	if e == nil || (e.expiry > 0 && e.expiry <= now) || (contextHash != "" && e.contextHash != contextHash) {
		m.stats.Misses++
		m.mu.Unlock()
		return nil, ErrMiss
	}
	u.access.add(member, float64(now))
	e.reads++
	m.stats.Hits++
	s := e.suggestions
	m.mu.Unlock()
	return decodeSuggestions(s)
}

func (m *Memory) Put(_ context.Context, user, key string, suggestions []Suggestion, contextHash string, confidence float64) error {
	enc, err := encodePut(user, key, suggestions, confidence)
	if err != nil {
		return err
	}
	now := ms(m.cfg.Now())
	ttl := m.cfg.entryTTL().Milliseconds()
	member := escape(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropLapsedUsers(now)
	u := m.users[user]
	if u == nil {
		u = &userCache{entries: make(map[string]*entry), index: newZset(), access: newZset(), confidence: newZset(), expiry: newZset()}
		m.users[user] = u
	}
	for x := u.expiry.first(); x != nil && x.score <= float64(now); x = u.expiry.first() {
		u.drop(x.member)
	}
	e := u.entries[member]
	if e == nil { // a new entry starts cold
		e = &entry{}
		u.entries[member] = e
	}
	e.suggestions, e.contextHash, e.expiry = enc, contextHash, 0
	u.index.add(member, 0)
	u.access.add(member, float64(now))
	u.confidence.add(member, confidence)
	if ttl > 0 {
		e.expiry = now + ttl
		u.expiry.add(member, float64(e.expiry))
		m.lapses.add(user, float64(now+ttl))
	} else {
		u.expiry.remove(member)
		m.lapses.remove(user)
	}
	order := u.access
	if m.cfg.Strategy == StrategyTTL {
		order = u.confidence
	}
	m.stats.Evictions += int64(u.evict(order, member, m.cfg.MaxSize, int64(m.cfg.HotThreshold)))
	return nil
}

// evict is putScript's eviction loop: walk order from the lowest, skipping
// the entry just put and sparing (once, at most maxHotSpares) keys read more
// than hot times, until at most max entries are left.
func (u *userCache) evict(order *zset, put string, max int, hot int64) int {
	evicted, nspared, sparing := 0, 0, true
	spared := make(map[string]bool)
	n := len(u.entries)
	x := order.first()
	for n > max {
		if x == nil {
			if !sparing {
				break
			}
			sparing, x = false, order.first()
			continue
		}
		c, next := x.member, x.next[0]
		switch {
		case c == put || (sparing && spared[c]):
		case sparing && nspared < maxHotSpares && u.entries[c].reads > hot:
			u.entries[c].reads = 0
			spared[c] = true
			nspared++
		default:
			u.drop(c)
			n--
			evicted++
		}
		x = next
	}
	return evicted
}

func (u *userCache) drop(member string) {
	delete(u.entries, member)
	u.index.remove(member)
	u.access.remove(member)
	u.confidence.remove(member)
	u.expiry.remove(member)
}

// dropLapsedUsers forgets users whose entries have all expired.
func (m *Memory) dropLapsedUsers(now int64) {
	for x := m.lapses.first(); x != nil && x.score <= float64(now); x = m.lapses.first() {
		delete(m.users, x.member)
		m.lapses.remove(x.member)
	}
}

func (m *Memory) Invalidate(_ context.Context, user, key string) (int, error) {
	if err := checkIDs(userKey, user, key); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[user]
	if u == nil || u.entries[escape(key)] == nil {
		return 0, nil
	}
	u.drop(escape(key))
	m.forgetIfEmpty(user, u)
	return 1, nil
}

func (m *Memory) InvalidatePrefix(_ context.Context, user, prefix string) (int, error) {
	if err := checkIDs(userKey[:1], user); err != nil {
		return 0, err
	}
	p := escape(prefix)
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[user]
	if u == nil {
		return 0, nil
	}
	n := 0
	for x := u.index.seek(0, p); x != nil && strings.HasPrefix(x.member, p); {
		next := x.next[0]
		u.drop(x.member)
		n++
		x = next
	}
	m.forgetIfEmpty(user, u)
	return n, nil
}

func (m *Memory) forgetIfEmpty(user string, u *userCache) {
	if len(u.entries) == 0 {
		delete(m.users, user)
		m.lapses.remove(user)
	}
}

func (m *Memory) PutPrecomputed(_ context.Context, user, docID string, value json.RawMessage) error {
	if err := checkPrecomputed(user, docID, value); err != nil {
		return err
	}
	now := ms(m.cfg.Now())
	k := tag(user) + ":" + escape(docID)
	p := precomputed{value: append(json.RawMessage(nil), value...), expiry: now + m.cfg.PrecomputedTTL.Milliseconds()}
	m.mu.Lock()
	defer m.mu.Unlock()
	for x := m.preExp.first(); x != nil && x.score <= float64(now); x = m.preExp.first() {
		delete(m.pre, x.member)
		m.preExp.remove(x.member)
	}
	m.pre[k] = p
	m.preExp.add(k, float64(p.expiry))
	return nil
}

func (m *Memory) GetPrecomputed(_ context.Context, user, docID string) (json.RawMessage, error) {
	if err := checkIDs(userDoc, user, docID); err != nil {
		return nil, err
	}
	now := ms(m.cfg.Now())
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pre[tag(user)+":"+escape(docID)]
	if !ok || p.expiry <= now {
		return nil, ErrMiss
	}
	return append(json.RawMessage(nil), p.value...), nil
}

func (m *Memory) Stats(context.Context) (Stats, error) {
	m.mu.Lock()
	s := m.stats
	m.mu.Unlock()
	s.computeHitRate()
	return s, nil
}
