# mrbacd — build, test, lint, benchmarks and install.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test lint chaos chaos-ha bench demo install container-check clean vault

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/mrbacd ./cmd/mrbacd

# The real Vault binary used by the tests, built once per version into ~/.cache/mrbacd.
vault:
	@./scripts/ensure-vault.sh

# Every test, with the race detector, against the real components (Vault dev
# server, moto_server, slacktest, the Mistral sandbox); then the Kubernetes
# manifests' check, a module of its own (deploy/kubernetes) so k8s.io stays
# out of mrbacd's go.mod.
test:
	$(GO) vet ./...
	@vault_bin=$$(./scripts/ensure-vault.sh) && \
	  MRBACD_VAULT_BIN="$$vault_bin" $(GO) test -race -count=1 -timeout 60m ./...
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) test -count=1 ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# 500 SIGKILLs of a running rotation across the file, Vault and AWS stores.
chaos:
	@vault_bin=$$(./scripts/ensure-vault.sh) && \
	  MRBACD_VAULT_BIN="$$vault_bin" MRBACD_KILLS=500 $(GO) test -count=1 -timeout 90m -run 'TestKill' -v ./test/kill/

# Two daemons on one PostgreSQL journal; the leader SIGKILLed 50 times during
# forced rotations and restarted; reports fail-over p50/max (`make test` runs 10).
chaos-ha:
	MRBACD_HA_KILLS=$${MRBACD_HA_KILLS:-50} $(GO) test -count=1 -timeout 30m -run 'TestChaosHA' -v ./test/ha/

# Every benchmark (gateway authorization, latency and max rate; 200-key rotation;
# 2,500-key audit; stores against their real servers; journal; config parsing).
bench:
	@vault_bin=$$(./scripts/ensure-vault.sh) && \
	  MRBACD_VAULT_BIN="$$vault_bin" $(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./...

demo: build
	./bin/mrbacd demo

install: build
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) deploy/install.sh bin/mrbacd

# Checks the container's build stage as plain shell (no Docker engine here) and the unit's rating.
container-check:
	$(GO) test -count=1 -run 'TestContainerBuildStage|TestSystemd' ./deploy/

clean:
	rm -rf bin
