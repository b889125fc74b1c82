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

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./e2e/ ./store/...

# The soak (not part of make test): three replicas on Redis under a fixed-rate
# load mix with chaos, then the auditor (e2e/soak_test.go). SOAK is its
# duration (default 10m), SOAK_RATE its requests per second (default 20).
# The timeout is SOAK plus 10m (Go adds "90s10m" up).
soak:
	SOAK=$${SOAK:-10m}; SOAK=$$SOAK $(GO) test -count=1 -run '^TestSoak$$' -timeout $${SOAK}10m -v ./e2e/
