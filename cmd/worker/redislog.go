package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// redisLogger passes go-redis's internal messages (failed dials, pool
// trouble) to slog, at most one every interval, counting what it held back.
type redisLogger struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < l.interval {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("redis: "+fmt.Sprintf(format, v...), "similar_messages_suppressed", suppressed)
}
