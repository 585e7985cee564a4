package cache

import (
	"context"
	"maps"
	"slices"
)

func (m *Memory) HGet(_ context.Context, key, field string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindHash)
	if err != nil {
		return "", err
	}
	if it == nil {
		return "", ErrMiss
	}
	v, ok := it.hash[field]
	if !ok {
		return "", ErrMiss
	}
	return v, nil
}

func (m *Memory) HSet(_ context.Context, key, field, value string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.create(key, kindHash)
	if err != nil {
		return false, err
	}
	_, had := it.hash[field]
	it.hash[field] = value
	return !had, nil
}

func (m *Memory) HMSet(_ context.Context, key string, fields map[string]string) error {
	if len(fields) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.create(key, kindHash)
	if err != nil {
		return err
	}
	maps.Copy(it.hash, fields)
	return nil
}

func (m *Memory) HGetAll(_ context.Context, key string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindHash)
	if err != nil || it == nil {
		return map[string]string{}, err
	}
	return maps.Clone(it.hash), nil
}

func (m *Memory) HDel(_ context.Context, key string, fields ...string) (int64, error) {
	return removeFrom(m, key, kindHash, func(it *item) map[string]string { return it.hash }, fields)
}

func (m *Memory) SAdd(_ context.Context, key string, members ...string) (int64, error) {
	if len(members) == 0 {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.create(key, kindSet)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, v := range members {
		if _, ok := it.set[v]; !ok {
			it.set[v] = struct{}{}
			n++
		}
	}
	return n, nil
}

func (m *Memory) SRem(_ context.Context, key string, members ...string) (int64, error) {
	return removeFrom(m, key, kindSet, func(it *item) map[string]struct{} { return it.set }, members)
}

// removeFrom removes names from the hash or set at key (elems gives its
// map), deletes the key once it is empty, and counts what it removed.
func removeFrom[V any](m *Memory, key string, k kind, elems func(*item) map[string]V, names []string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, k)
	if it == nil {
		return 0, err
	}
	e := elems(it)
	var n int64
	for _, name := range names {
		if _, ok := e[name]; ok {
			delete(e, name)
			n++
		}
	}
	m.removeIfEmpty(it)
	return n, nil
}

func (m *Memory) SIsMember(_ context.Context, key, member string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindSet)
	if it == nil {
		return false, err
	}
	_, ok := it.set[member]
	return ok, nil
}

func (m *Memory) SMembers(_ context.Context, key string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindSet)
	if err != nil || it == nil {
		return []string{}, err
	}
	return slices.Sorted(maps.Keys(it.set)), nil
}
