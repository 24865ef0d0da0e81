#!/usr/bin/env bash
# Builds the Vault binary used by the tests from the Go module proxy, once per
# version, and prints its path. The cache lives outside the work tree so a
# fresh clone (CI) reuses it: $MRBACD_TOOLS_CACHE, default ~/.cache/mrbacd.
# The body is one function so that editing this file while it runs is safe.
set -euo pipefail

main() {
  local version=v1.21.0
  local here cache bin tmp
  here=$(cd "$(dirname "$0")/.." && pwd)
  cache=${MRBACD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mrbacd}
  bin="$cache/vault-$version/vault"
  if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  mkdir -p "$(dirname "$bin")"
  # One build at a time per machine: test packages running in parallel wait here.
  exec 9>"$bin.lock"
  flock 9
  # A build started without the lock (an older copy of this script) is waited for, not duplicated.
  while pgrep -f "go build .*-o $bin.tmp" >/dev/null 2>&1; do
    echo "ensure-vault: waiting for the vault build already running" >&2
    sleep 10
  done
  if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "ensure-vault: go is not on PATH; install Go 1.26 or set MRBACD_VAULT_BIN to a vault $version binary" >&2
    return 1
  fi
  echo "building vault $version into $bin (first time only: ~4 GB of modules, several minutes)" >&2
  tmp="$bin.tmp.$$"
  # Expanded now: the EXIT trap runs after main returns, when its locals are gone.
  # shellcheck disable=SC2064
  trap "rm -f '$tmp'" EXIT
  (cd "$here/tools/vault" && GOFLAGS=-mod=mod go build -mod=mod -o "$tmp" .)
  "$tmp" version >/dev/null
  mv "$tmp" "$bin"
  echo "$bin"
}

main "$@"
