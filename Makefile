GO ?= go
.PHONY: build test
build:
	$(GO) build -o bin/mrbacd ./cmd/mrbacd
test:
	$(GO) test -race -count=1 ./...
