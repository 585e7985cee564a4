package worker

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The intake holds the consume loop once limit messages wait, lets it go on
// as soon as a lane takes some, and never holds it longer than patience.
func TestIntakeWaitsForRoom(t *testing.T) {
	in := newIntake(1, 2, time.Hour)
	var m jetstream.Msg
	never := make(chan struct{})
	in.put(0, m, never)
	put := func() chan struct{} {
		done := make(chan struct{})
		go func() { in.put(0, m, never); close(done) }()
		return done
	}
	second := put() // reaches the limit and waits
	select {
	case <-second:
		t.Fatal("put returned with the intake full")
	case <-time.After(100 * time.Millisecond):
	}
	if got := in.lanes[0].take(10, nil); len(got) != 2 {
		t.Fatalf("took %d messages, want 2", len(got))
	}
	in.took(2)
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("put still waiting after the lane took its messages")
	}

	impatient := newIntake(1, 1, 10*time.Millisecond)
	done := make(chan struct{})
	go func() { impatient.put(0, m, never); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("put waited past its patience")
	}
	if got := impatient.waiting.Load(); got != 1 {
		t.Errorf("%d messages waiting, want 1 (queued although the intake was full)", got)
	}

	in.close()
	if got := in.lanes[0].take(10, nil); got != nil {
		t.Errorf("take after close on an empty lane: %d messages, want nil", len(got))
	}
}
