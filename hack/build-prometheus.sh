#!/usr/bin/env bash
# Builds Prometheus and promtool from the Go module proxy, and takes prometheus-operator's CRDs
# (ServiceMonitor, PodMonitor, PrometheusRule) from its module, into a cache outside the
# repository keyed by version, so only the first run on a machine pays for the build (~5 min).
#
#   hack/build-prometheus.sh            # prints the directory holding bin/ and crds/
#
# The monitoring tests call this (tests/monitoring.py): promtool checks and unit-tests the
# alert rules, a real Prometheus scrapes the local platform, and the chart's monitoring objects
# are validated against the CRD schemas prometheus-operator ships.
set -euo pipefail

# Prometheus 3.x is published as Go module v0.3XX.Y (v0.316.0 is Prometheus 3.16.0).
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.94.0}
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
OUT="$CACHE/prometheus/prometheus-$PROMETHEUS_VERSION-operator-$PROMETHEUS_OPERATOR_VERSION"
BIN="$OUT/bin"
CRDS="$OUT/crds"
WANT_BIN=(prometheus promtool)
WANT_CRD=(servicemonitors podmonitors prometheusrules)

have_all() {
  for b in "${WANT_BIN[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  for c in "${WANT_CRD[@]}"; do [ -s "$CRDS/monitoring.coreos.com_$c.yaml" ] || return 1; done
}
if have_all; then echo "$OUT"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' is required to build Prometheus" >&2; exit 1; }
mkdir -p "$BIN" "$CRDS"
exec 9>"$OUT/.lock"
flock 9 # two concurrent test sessions build once
if have_all; then echo "$OUT"; exit 0; fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
started=$(date +%s)

# The CRDs: the module's example/prometheus-operator-crd/, as `go mod download` unpacks it.
dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
  sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
for c in "${WANT_CRD[@]}"; do
  install -m 0644 "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$c.yaml" "$CRDS/"
done

# Prometheus's go.mod has no replace directives, so `go install pkg@version` works as is; both
# commands in one invocation share the compiled dependencies. The web UI's assets are not in
# the module (no `builtinassets` tag): the HTTP API is all the tests use.
echo "building Prometheus $PROMETHEUS_VERSION into $BIN; the first build takes about 5 minutes" >&2
GOBIN="$BIN" go install -trimpath -ldflags="-s -w" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
have_all
echo $(( $(date +%s) - started )) >"$OUT/build-seconds"
echo "$OUT"
