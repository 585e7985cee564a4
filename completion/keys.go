package completion

import "strings"

// Redis keys, after the original system's table, scoped per user. The
// escaped user id is a hash tag, so all of one user's keys share a Redis
// Cluster slot and one Lua script may touch them all. The stats counters are
// global and are never touched by a script.
//
//	cache:{u}:<key>          HASH  one entry (s suggestions, h context hash, c confidence, e expiry ms)
//	access_order:{u}         ZSET  key -> last access, ms (LRU order)
//	hot_keys:{u}             HASH  key -> reads since put or since last spared
//	confidence_order:{u}     ZSET  key -> confidence (ttl strategy's order)
//	expiry_order:{u}         ZSET  key -> expiry, ms
//	key_index:{u}            ZSET  key -> 0 (lexicographic, for prefix invalidation)
//	stats:<stat>             STRING counter
//	precomputed:{u}:<doc>    STRING "<expiry ms>:<JSON value>"
type keys struct {
	base string // "<prefix>completion:"
}

func newKeys(prefix string) keys { return keys{base: prefix + "completion:"} }

var escaper = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")

// escape makes an id safe inside a key: two different ids never give the
// same key, and a user id cannot open or close the hash tag. It is a prefix
// code, so escape(p) is a prefix of escape(k) exactly when p is one of k.
func escape(id string) string { return escaper.Replace(id) }

func tag(user string) string { return "{" + escape(user) + "}" }

func (k keys) entry(user, key string) string { return k.entryPrefix(user) + escape(key) }

// entryPrefix is entry without the key: scripts append a member to it.
func (k keys) entryPrefix(user string) string { return k.base + "cache:" + tag(user) + ":" }

func (k keys) accessOrder(user string) string     { return k.base + "access_order:" + tag(user) }
func (k keys) hotKeys(user string) string         { return k.base + "hot_keys:" + tag(user) }
func (k keys) confidenceOrder(user string) string { return k.base + "confidence_order:" + tag(user) }
func (k keys) expiryOrder(user string) string     { return k.base + "expiry_order:" + tag(user) }
func (k keys) keyIndex(user string) string        { return k.base + "key_index:" + tag(user) }
func (k keys) stat(name string) string            { return k.base + "stats:" + name }

func (k keys) precomputed(user, docID string) string {
	return k.base + "precomputed:" + tag(user) + ":" + escape(docID)
}

// userSets are the KEYS[1..5] every user script starts with.
func (k keys) userSets(user string) []string {
	return []string{k.keyIndex(user), k.accessOrder(user), k.confidenceOrder(user), k.expiryOrder(user), k.hotKeys(user)}
}

// Stat names, the <stat> of stats:<stat>.
const (
	statTotalRequests = "total_requests"
	statHits          = "hits"
	statMisses        = "misses"
	statEvictions     = "evictions"
)

// lexRange returns the ZRANGEBYLEX bounds of the members that start with
// prefix (already escaped): from "[prefix" up to, not including, the
// smallest string greater than every string with that prefix.
func lexRange(prefix string) (lo, hi string) {
	lo = "[" + prefix
	b := []byte(prefix)
	for len(b) > 0 && b[len(b)-1] == 0xff {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return lo, "+"
	}
	b[len(b)-1]++
	return lo, "(" + string(b)
}
