package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

const progressEvery = 250 * time.Millisecond

// progress is a snapshot of a running load.
type progress struct {
	published, failed int64
	pending           int
}

// startProgress keeps a live progress line on w while w is a terminal,
// refreshed about four times a second. The returned stop clears the line.
func startProgress(w io.Writer, total int, status func() progress) (stop func()) {
	if !isTerminal(w) {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
				p := status()
				pct := 100.0
				if total > 0 {
					pct = 100 * float64(p.published) / float64(total)
				}
				fmt.Fprintf(w, "\r\x1b[Kpublished %d/%d (%.0f%%)  %.0f msg/s  pending %d  failures %d",
					p.published, total, pct, float64(p.published)/time.Since(start).Seconds(), p.pending, p.failed)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// isTerminal reports whether v is a file that is a character device, such
// as a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
