# statusbroadcaster — common tasks. `make test` is what CI runs.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        ?= ./...

.PHONY: run build test lint vet staticcheck fmt bench load fuzz compare compare-full idle-memory clean

## run: the service in memory with the demo, on http://localhost:8080
run:
	$(GO) run ./cmd/statusd --demo

## build: the statusd binary in ./bin
build:
	$(GO) build -o bin/statusd ./cmd/statusd

## test: vet, staticcheck, then every test with the race detector
test: vet staticcheck
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

## lint: formatting, vet and staticcheck
lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(STATICCHECK) $(PKGS)

## bench: the benchmarks, with allocations (see BENCHMARKS.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## load: the load program against a fresh statusd (see BENCHMARKS.md)
load: build
	$(GO) run ./cmd/statusload --statusd bin/statusd --clients 1000 --stalled 1 --events 10000

## fuzz: every fuzz target in turn, FUZZTIME each (seeds: testdata/fuzz/; make test runs them)
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done
## compare: statusd against Centrifugo v6 (when installed), quick mode, under 3 minutes (see BENCHMARKS.md)
compare: build
	$(GO) run ./cmd/statusload --statusd bin/statusd --compare --quick

## compare-full: every scenario, 3 runs each, medians with min–max
compare-full: build
	$(GO) run ./cmd/statusload --statusd bin/statusd --compare --repeat 3

## idle-memory: RSS per idle stream, HTTP/1.1 (5,000 streams) and HTTP/2 (5,000 on 50 connections)
idle-memory: build
	$(GO) run ./cmd/statusload --statusd bin/statusd --idle 5000
	$(GO) run ./cmd/statusload --statusd bin/statusd --idle 5000 --h2c-conns 50

clean:
	rm -rf bin testoutput
