package completion

import "math/rand/v2"

// zset is an in-memory sorted set with Redis's order: by score, then by
// member bytes. It is a skip list plus a map of scores, so add and remove
// are O(log n) and walking from the lowest is O(1) a step.
type zset struct {
	head   znode
	level  int
	scores map[string]float64
}

type znode struct {
	member string
	score  float64
	next   []*znode
}

const zsetMaxLevel = 24

func newZset() *zset {
	return &zset{head: znode{next: make([]*znode, zsetMaxLevel)}, level: 1, scores: make(map[string]float64)}
}

func (z *zset) len() int { return len(z.scores) }

func before(n *znode, score float64, member string) bool {
	return n.score < score || (n.score == score && n.member < member)
}

// path fills update with the last node on each level before (score, member).
func (z *zset) path(score float64, member string, update []*znode) {
	x := &z.head
	for i := z.level - 1; i >= 0; i-- {
		for x.next[i] != nil && before(x.next[i], score, member) {
			x = x.next[i]
		}
		update[i] = x
	}
}

// add inserts member or moves it to its new score.
func (z *zset) add(member string, score float64) {
	if old, ok := z.scores[member]; ok {
		if old == score {
			return
		}
		z.remove(member)
	}
	var update [zsetMaxLevel]*znode
	z.path(score, member, update[:])
	lvl := 1
	for lvl < zsetMaxLevel && rand.IntN(4) == 0 {
		lvl++
	}
	for i := z.level; i < lvl; i++ {
		update[i] = &z.head
	}
	z.level = max(z.level, lvl)
	n := &znode{member: member, score: score, next: make([]*znode, lvl)}
	for i := range lvl {
		n.next[i] = update[i].next[i]
		update[i].next[i] = n
	}
	z.scores[member] = score
}

// remove deletes member; it reports whether it was there.
func (z *zset) remove(member string) bool {
	score, ok := z.scores[member]
	if !ok {
		return false
	}
	var update [zsetMaxLevel]*znode
	z.path(score, member, update[:])
	n := update[0].next[0]
	for i := 0; i < z.level && update[i].next[i] == n; i++ {
		update[i].next[i] = n.next[i]
	}
	for z.level > 1 && z.head.next[z.level-1] == nil {
		z.level--
	}
	delete(z.scores, member)
	return true
}

// first returns the lowest node, or nil.
func (z *zset) first() *znode { return z.head.next[0] }

// seek returns the first node at or after (score, member), or nil.
func (z *zset) seek(score float64, member string) *znode {
	var update [zsetMaxLevel]*znode
	z.path(score, member, update[:])
	return update[0].next[0]
}
