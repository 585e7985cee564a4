package cache

import (
	"context"
	"slices"
)

func (m *Memory) LPush(ctx context.Context, key string, values ...string) (int64, error) {
	return m.push(ctx, key, values, true)
}

func (m *Memory) RPush(ctx context.Context, key string, values ...string) (int64, error) {
	return m.push(ctx, key, values, false)
}

func (m *Memory) push(_ context.Context, key string, values []string, head bool) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(values) == 0 {
		it, err := m.typed(key, kindList)
		if it == nil {
			return 0, err
		}
		return int64(len(it.list)), nil
	}
	it, err := m.create(key, kindList)
	if err != nil {
		return 0, err
	}
	if head {
		// LPUSH a b c leaves c b a at the head.
		rev := slices.Clone(values)
		slices.Reverse(rev)
		it.list = append(rev, it.list...)
	} else {
		it.list = append(it.list, values...)
	}
	return int64(len(it.list)), nil
}

func (m *Memory) LPop(ctx context.Context, key string) (string, error) {
	return m.pop(ctx, key, true)
}

func (m *Memory) RPop(ctx context.Context, key string) (string, error) {
	return m.pop(ctx, key, false)
}

func (m *Memory) pop(_ context.Context, key string, head bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindList)
	if err != nil {
		return "", err
	}
	if it == nil {
		return "", ErrMiss
	}
	var v string
	if head {
		v, it.list = it.list[0], it.list[1:]
	} else {
		v, it.list = it.list[len(it.list)-1], it.list[:len(it.list)-1]
	}
	m.removeIfEmpty(it)
	return v, nil
}

// span converts Redis's inclusive, possibly negative, list indexes into a
// slice range over n elements; ok is false for an empty range.
func span(n, start, stop int64) (lo, hi int64, ok bool) {
	if start < 0 {
		start = max(start+n, 0)
	}
	if stop < 0 {
		stop += n
	}
	stop = min(stop, n-1)
	if start > stop || start >= n {
		return 0, 0, false
	}
	return start, stop + 1, true
}

func (m *Memory) LRange(_ context.Context, key string, start, stop int64) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindList)
	if err != nil || it == nil {
		return []string{}, err
	}
	lo, hi, ok := span(int64(len(it.list)), start, stop)
	if !ok {
		return []string{}, nil
	}
	return slices.Clone(it.list[lo:hi]), nil
}

func (m *Memory) LLen(_ context.Context, key string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindList)
	if it == nil {
		return 0, err
	}
	return int64(len(it.list)), nil
}

func (m *Memory) LTrim(_ context.Context, key string, start, stop int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindList)
	if it == nil {
		return err
	}
	lo, hi, ok := span(int64(len(it.list)), start, stop)
	if !ok {
		m.remove(it)
		return nil
	}
	it.list = slices.Clone(it.list[lo:hi])
	return nil
}
