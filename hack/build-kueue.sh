#!/usr/bin/env bash
# Builds Kueue (the job queueing and quota controller the Kueue tests and bench/kueue_admission.py
# run against the local control plane) from the Go module proxy, and takes its CRDs and webhook
# configurations from the same module, into a cache outside the repository keyed by version, so
# only the first run on a machine pays for the build (~3 min on 2 cores).
#
#   hack/build-kueue.sh     # prints the directory holding bin/kueue, crds/ and webhook/
#
# Kueue's go.mod has no replace directives, so `go install MODULE/cmd/kueue@VERSION` builds it as
# released (hack/localkube/kueue.py starts it).
set -euo pipefail

VERSION=${KUEUE_VERSION:-v0.17.0}
MODULE=sigs.k8s.io/kueue
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
OUT="$CACHE/kueue/$VERSION"

have_all() {
  [ -x "$OUT/bin/kueue" ] && [ -s "$OUT/crds/kueue.x-k8s.io_workloads.yaml" ] \
    && [ -s "$OUT/webhook/manifests.yaml" ]
}
if have_all; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "error: 'go' is required to build Kueue" >&2; exit 1; }
mkdir -p "$OUT/bin" "$OUT/crds" "$OUT/webhook"
exec 9>"$OUT/.lock"
flock 9 # two sessions on one machine build once
if have_all; then echo "$OUT"; exit 0; fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
started=$(date +%s)
dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
install -m 0644 "$dir"/config/components/crd/bases/*.yaml "$OUT/crds/"
install -m 0644 "$dir/config/components/webhook/manifests.yaml" "$OUT/webhook/"
echo "building Kueue $VERSION into $OUT/bin (the first build takes about three minutes)" >&2
tmp=$(mktemp -d)
GOBIN="$tmp" go install -trimpath -ldflags="-s -w" "$MODULE/cmd/kueue@$VERSION" >&2
mv "$tmp/kueue" "$OUT/bin/kueue"
rmdir "$tmp"
echo $(( $(date +%s) - started )) >"$OUT/build-seconds"
echo "$OUT"
