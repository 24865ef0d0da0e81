#!/usr/bin/env bash
# Builds the Vault binary used by the tests from the Go module proxy, once per
# version, and prints its path. The cache lives outside the work tree so a
# fresh clone (CI) reuses it: $MRBACD_TOOLS_CACHE, default ~/.cache/mrbacd.
set -euo pipefail
version=v1.21.0
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${MRBACD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mrbacd}
bin="$cache/vault-$version/vault"
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
mkdir -p "$(dirname "$bin")"
echo "building vault $version into $bin (first time only: several minutes)" >&2
tmp="$bin.tmp.$$"
(cd "$here/tools/vault" && GOFLAGS=-mod=mod go build -mod=mod -o "$tmp" .)
mv "$tmp" "$bin"
echo "$bin"
