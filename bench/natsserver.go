package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/procs"
)

// natsBinary is one nats-server build under comparison.
type natsBinary struct {
	Label   string `json:"label"` // "current" or "debian"
	Path    string `json:"path"`
	Version string `json:"version"` // nats-server --version
}

// natsServer is one nats-server process with JetStream in its own store
// directory, which stop removes.
type natsServer struct {
	bin *natsBinary
	p   *procs.Proc
	url string
	dir string
}

func startNATS(ctx context.Context, ps *procs.Group, bin *natsBinary, dir string) (*natsServer, error) {
	var lastErr error
	for range 5 {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		port, err := procs.FreePort()
		if err != nil {
			return nil, err
		}
		p, err := ps.Start("nats-server "+bin.Version, filepath.Join(dir, "nats.log"), nil, bin.Path,
			"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", filepath.Join(dir, "store"))
		if err != nil {
			return nil, err
		}
		n := &natsServer{bin: bin, p: p, url: fmt.Sprintf("nats://127.0.0.1:%d", port), dir: dir}
		lastErr = procs.WaitFor(ctx, p, 15*time.Second, func() error {
			nc, err := nats.Connect(n.url, nats.Timeout(time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			_, err = js.AccountInfo(ctx)
			return err
		})
		if lastErr == nil {
			return n, nil
		}
		p.Stop(time.Second)
	}
	return nil, fmt.Errorf("nats-server %s did not come up: %w", bin.Version, lastErr)
}

// connect returns a client connection and its JetStream context.
func (n *natsServer) connect(opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(n.url, nats.Name("chatbuf-bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", n.url, err)
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (n *natsServer) stop() {
	if n == nil {
		return
	}
	n.p.Stop(10 * time.Second)
	_ = os.RemoveAll(filepath.Join(n.dir, "store"))
}
