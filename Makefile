# chatbuf: `make demo` runs the main job; `make test` runs the tests.
GO            ?= go
STATICCHECK   ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 30s
TEST_FLAGS    ?= -race -timeout 15m

.PHONY: all build demo test test-python lint deps fuzz bench chaos gobench clean

all: build

build:
	$(GO) build -o bin/worker ./cmd/worker
	$(GO) build -o bin/producer ./cmd/producer
	$(GO) build -o bin/gateway ./cmd/gateway
	$(GO) build -o bin/chatbufctl ./cmd/chatbufctl

## demo: a worker on embedded NATS and ~10 s of producer load --verify.
demo:
	./scripts/demo.sh

## deps: install redis-server and nats-server where missing (apt-get).
deps:
	./scripts/ensure-deps.sh

## lint: gofmt, go vet, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

## test: deps, lint, every Go test with the race detector, then test-python.
test: deps lint
	$(GO) test $(TEST_FLAGS) ./...
	./scripts/test-python.sh

## test-python: the OpenContext consumer's pytest suite (contrib/opencontext)
## against a private nats-server, redis-server and a worker built from here;
## a venv in contrib/opencontext/.venv. No test collected is a failure.
test-python: deps
	./scripts/test-python.sh

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: the benchmark harness (about 20 min): private redis-server and nats-server
## processes, references, buffer layer, drain, baseline, steady state, HTTP ingest, growth;
## prints a table, writes bench/results/latest.{md,json} and a dated copy.
## BENCH_FLAGS passes flags (go run ./bench --help), e.g. --max-conversations=100000.
bench: deps
	$(GO) run ./bench $(BENCH_FLAGS)

## bench-smoke: the harness in its ~20 s mode (bench/results/smoke-latest.*),
## for CI; fails only when a measurement cannot be taken, never on a target.
.PHONY: bench-smoke
bench-smoke: deps
	$(GO) run ./bench --smoke $(BENCH_FLAGS)

## gobench: the Go benchmarks of the hot paths (decode, keys, append,
## claim/commit, batch encoding, completion cache) with -benchmem.
gobench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./chat/ ./buffer/ ./completion/

## chaos: the fault tests in their long form (kill -9 under 30,000 messages,
## Redis and NATS restarts, SIGSTOP past the lock, a 30 s Redis outage with
## the fallback, poison and pressure, a minute of steady load for memory,
## cluster failovers). CI runs the same tests in their short form.
chaos: deps
	CHATBUF_CHAOS=long $(GO) test -count=1 -timeout 60m -v -run 'TestCrash|TestRedis|TestNATS|TestStale|TestPoison|TestBounded' ./e2e/

clean:
	rm -rf bin
