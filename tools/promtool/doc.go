// Package promtool pins the Prometheus promtool used by mrbacd's alerting
// rule tests (deploy/monitoring). It is a module of its own so that the
// Prometheus dependency graph stays out of mrbacd's go.mod; the tool is
// built by scripts/ensure-promtool.sh into the tools cache.
package promtool
