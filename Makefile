# usher — `make test` is the one command CI and newcomers run.
GO ?= go
FUZZTIME ?= 10m

.PHONY: test deps vet unit bench fuzz build test-artifacts soak

test: deps vet unit

# Installs what the tests need when it is missing (Chromium for the browser
# end-to-end tests, redis-server for the Redis backend tests).
deps:
	@./scripts/install-test-deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -timeout 45m ./...

# The same tests, keeping their artifacts (screenshots of the admin pages,
# the funnel, the accept page and the mail; failure screenshots) under
# test-artifacts/.
test-artifacts: deps vet
	mkdir -p test-artifacts
	$(GO) test -race -timeout 45m -artifacts -outputdir $(CURDIR)/test-artifacts ./...

build:
	$(GO) build -o bin/usher .

# Runs every fuzz target for FUZZTIME each (make test runs their seed corpora).
fuzz:
	$(GO) test ./broker/ -run '^$$' -fuzz '^FuzzAuthorize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./broker/ -run '^$$' -fuzz '^FuzzInviteLink$$' -fuzztime $(FUZZTIME)
	$(GO) test ./broker/ -run '^$$' -fuzz '^FuzzCreateInvitation$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config/ -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

# Every benchmark, on bbolt and Redis; the figures issue 14 sets targets for
# end as one Markdown table (internal/benchtable reads the output). The
# benchmarks doing a fixed amount of work whatever b.N run once (-benchtime
# 1x). Fails when any benchmark fails: /bin/sh (dash) has no pipefail, so
# each failing step leaves a line in a file. The benchmarks run usher in
# their own process, so BENCH_GOGC gives them the GC target the usher binary
# sets for itself (main.go: defaultGCPercent); BENCH_GOGC=100 measures Go's
# default.
BENCHTIME ?= 3s
BENCH_GOGC ?= 400
BENCH_ONCE = BenchmarkInvitationRedeemConcurrency|BenchmarkProcessMemory|BenchmarkMemoryPerRecord|BenchmarkMemoryPerInvitationAtScale
bench:
	@failed=$$(mktemp); \
	{ GOGC=$(BENCH_GOGC) $(GO) test -run '^$$' -bench . -skip '$(BENCH_ONCE)' -benchtime $(BENCHTIME) ./e2e/ ./store/... 2>&1 || echo go test >>$$failed; \
	  GOGC=$(BENCH_GOGC) $(GO) test -run '^$$' -bench '$(BENCH_ONCE)' -benchtime 1x ./e2e/ ./store/... 2>&1 || echo go test, once >>$$failed; } \
	| $(GO) run ./internal/benchtable || echo benchtable >>$$failed; \
	if [ -s $$failed ]; then echo "make bench: failed: $$(cat $$failed | tr '\n' ' ')"; rm -f $$failed; exit 1; fi; rm -f $$failed

# The soak (not part of make test): three replicas on Redis under a fixed-rate
# load mix with chaos, then the auditor (e2e/soak_test.go). SOAK is its
# duration (default 10m), SOAK_RATE its requests per second (default 20).
# The timeout is SOAK plus 10m (Go adds "90s10m" up).
soak:
	SOAK=$${SOAK:-10m}; SOAK=$$SOAK $(GO) test -count=1 -run '^TestSoak$$' -timeout $${SOAK}10m -v ./e2e/
