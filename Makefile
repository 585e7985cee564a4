# chatbuf: `make demo` runs the main job; `make test` runs the tests.
GO            ?= go
STATICCHECK   ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 30s
TEST_FLAGS    ?= -race -timeout 15m

.PHONY: all build demo test lint deps fuzz bench clean

all: build

build:
	$(GO) build -o bin/worker ./cmd/worker
	$(GO) build -o bin/producer ./cmd/producer

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

## test: deps, lint, then every test with the race detector.
test: deps lint
	$(GO) test $(TEST_FLAGS) ./...

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: Go benchmarks of the hot paths against a private redis-server.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
