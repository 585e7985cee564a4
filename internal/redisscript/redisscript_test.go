package redisscript_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/redisscript"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// incr is not safe to run twice: each run counts.
const incrSrc = `return redis.call('INCR', KEYS[1])`

var incr = redis.NewScript(incrSrc)

// TestOnlyCallsRefusedWithNOSCRIPTRunAgain: the server lacks the script
// for the first call of a pipeline and has it for the second (another
// client loaded it in between). Pipelined runs the first again and not
// the second: each call counts once.
func TestOnlyCallsRefusedWithNOSCRIPTRunAgain(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	cmds, err := redisscript.Pipelined(ctx, rdb, incr, 3, func(p redis.Pipeliner, i int) *redis.Cmd {
		if i == 1 {
			p.ScriptLoad(ctx, incrSrc) // another client, midway
		}
		return incr.EvalSha(ctx, p, []string{fmt.Sprint("n", i%2)})
	})
	if err != nil {
		t.Fatalf("Pipelined: %v", err)
	}
	var got []int64
	for i, c := range cmds {
		v, err := c.Int64()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got = append(got, v)
	}
	n0, _ := rdb.Get(ctx, "n0").Int64()
	n1, _ := rdb.Get(ctx, "n1").Int64()
	if n0 != 2 || n1 != 1 {
		t.Errorf("counters n0=%d n1=%d after calls on n0, n1, n0; want 2 and 1 (replies %v)", n0, n1, got)
	}
}
