# tsmigrate — the two commands a new user needs:
#   make demo   two local servers, sample time-series data, the whole flow
#   make test   the test suite against real servers
# (make test-short: the tests that need no server, in seconds, on any machine)
GO ?= go
PKGS ?= ./...

.PHONY: all build servers demo test test-short check docs bench hooks

all: build

build:
	$(GO) build -o bin/tsmigrate ./cmd/tsmigrate

# Installs PostgreSQL 15, PostgreSQL 17 + TimescaleDB (Debian 13 root) and PostgreSQL 16
# under /var/cache/tsmigrate; a no-op when they are there. Needs root.
servers:
	@bash scripts/setup-servers.sh >/dev/null

demo: servers
	$(GO) run ./demo

# gofmt, go vet and staticcheck (pinned in go.mod as a tool: go tool staticcheck).
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

test: servers check
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

# The fast tier: no server, no root; the tests that need servers skip. Seconds.
test-short:
	$(GO) test -short -count=1 $(PKGS)

# docs/cli, the command line's reference, from the commands' definitions (cobra/doc).
# The tests (TestDocsCurrent, in both tiers) fail when it is not current.
docs:
	$(GO) run ./internal/cli/gendocs docs/cli

bench:
	@bash scripts/setup-servers.sh --with-pgcopydb >/dev/null
	$(GO) run ./bench/migrate

# Installs the commit-msg hook that checks the subject (CONTRIBUTING.md) into this
# clone's hooks directory (shared by its worktrees; core.hooksPath when set).
hooks:
	@hooks=$$(git rev-parse --git-path hooks) && mkdir -p "$$hooks" && \
		install -m 0755 scripts/hooks/commit-msg "$$hooks/commit-msg" && \
		echo "installed $$hooks/commit-msg"
