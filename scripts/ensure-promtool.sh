#!/usr/bin/env bash
# Builds promtool (github.com/prometheus/prometheus/cmd/promtool, pinned by
# tools/promtool/go.mod) once per version and prints its path. Same cache as
# ensure-vault.sh: $MRBACD_TOOLS_CACHE, default ~/.cache/mrbacd.
# The body is one function so that editing this file while it runs is safe.
set -euo pipefail

main() {
  local here cache version bin tmp
  here=$(cd "$(dirname "$0")/.." && pwd)
  version=$(awk '$1 == "github.com/prometheus/prometheus" {print $2}' "$here/tools/promtool/go.mod")
  if [ -z "$version" ]; then
    echo "ensure-promtool: no github.com/prometheus/prometheus version in tools/promtool/go.mod" >&2
    return 1
  fi
  cache=${MRBACD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mrbacd}
  bin="$cache/promtool-$version/promtool"
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  mkdir -p "$(dirname "$bin")"
  # One build at a time per machine: test packages running in parallel wait here.
  exec 9>"$bin.lock"
  flock 9
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "ensure-promtool: go is not on PATH; install Go 1.26 or set MRBACD_PROMTOOL_BIN to a promtool $version binary" >&2
    return 1
  fi
  echo "building promtool $version into $bin (first time only: a few minutes)" >&2
  tmp="$bin.tmp.$$"
  # shellcheck disable=SC2064
  trap "rm -f '$tmp'" EXIT
  (cd "$here/tools/promtool" && go build -mod=mod -o "$tmp" github.com/prometheus/prometheus/cmd/promtool)
  "$tmp" --version >/dev/null
  mv "$tmp" "$bin"
  echo "$bin"
}

main "$@"
