// Package cache is the typed Redis cache layer kept from OpenContext, as a
// library for Go code on OpenContext's side: strings and JSON values,
// lists, hashes, sets, counters and a lock, backed by Redis (Redis), by
// process memory (Memory), or by Redis with an automatic fall back to
// memory while Redis is unreachable (Fallback).
//
// chatbuf's own commands do not use it: the buffers (package buffer) and
// the completion cache (package completion) keep their own Redis layouts,
// one Lua script per operation. See docs/cache.md.
//
// Keys are given unprefixed and stored under Config.Prefix. A miss is never
// an error in disguise: it is ErrMiss, and every other failure is a wrapped
// error of its own (ErrUnavailable, ErrWrongType, ...), to be told apart with
// errors.Is.
package cache
