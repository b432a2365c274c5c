#!/usr/bin/env bash
# Builds Kubeflow's training-operator (the controller-runtime peer that bench/operator_scale.py
# --peer training-operator measures the operator against) from the Go module proxy, and takes its
# CRDs from the module, into a cache outside the repository keyed by version (~1 min to build).
#
#   hack/build-training-operator.sh     # prints the directory holding bin/ and crds/
set -euo pipefail

VERSION=${TRAINING_OPERATOR_VERSION:-v1.8.1}
MODULE=github.com/kubeflow/training-operator
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
OUT="$CACHE/training-operator/$VERSION"
BIN="$OUT/bin/training-operator"
CRD="$OUT/crds/kubeflow.org_pytorchjobs.yaml"

if [ -x "$BIN" ] && [ -s "$CRD" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "error: 'go' is required to build training-operator" >&2; exit 1; }
mkdir -p "$OUT/bin" "$OUT/crds"
exec 9>"$OUT/.lock"
flock 9 # two concurrent sessions build once
if [ -x "$BIN" ] && [ -s "$CRD" ]; then echo "$OUT"; exit 0; fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
started=$(date +%s)
dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
install -m 0644 "$dir/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$OUT/crds/"
# Its go.mod has no replace directives, so `go install pkg@version` builds it as released.
echo "building training-operator $VERSION into $OUT/bin; the first build takes about a minute" >&2
tmp=$(mktemp -d)
GOBIN="$tmp" go install -trimpath -ldflags="-s -w" "$MODULE/cmd/training-operator.v1@$VERSION" >&2
mv "$tmp/training-operator.v1" "$BIN"
rmdir "$tmp"
echo $(( $(date +%s) - started )) >"$OUT/build-seconds"
echo "$OUT"
