// Package redisscript runs many calls of one Lua script in one pipelined
// round trip, as buffer and locking do for their batched operations.
package redisscript

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Pipelined runs n calls of s in one pipeline: queue(p, i) adds call i to p
// (s.EvalSha, or an "evalsha" command built by hand) and returns its
// command. When the server answers NOSCRIPT to some calls (it lost its
// script cache: a restart, SCRIPT FLUSH, a failover to a replica that never
// loaded it; or it had not loaded s yet while another client loaded it
// midway through the pipeline), Pipelined loads s and runs those calls
// again, and only those: the others ran, and a script need not be safe to
// run twice.
//
// Each call's reply or error is in its command. The error returned is the
// failure to load s, or an error of the pipeline that is not a reply
// (network, timeout, closed client); error replies are left to the
// commands.
func Pipelined(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, n int, queue func(p redis.Pipeliner, i int) *redis.Cmd) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, n)
	run := func(idx []int) error {
		pipe := rdb.Pipeline()
		for _, i := range idx {
			cmds[i] = queue(pipe, i)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	err := run(all)
	var again []int
	for i, c := range cmds {
		if isNoScript(c.Err()) {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return nil, fmt.Errorf("load script: %w", err)
		}
		err = run(again)
	}
	if err != nil && !errors.As(err, new(redis.Error)) {
		return nil, err
	}
	return cmds, nil
}

// isNoScript reports whether err is Redis's NOSCRIPT reply: EVALSHA of a
// script the server does not hold.
func isNoScript(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOSCRIPT")
}
