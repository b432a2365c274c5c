#!/usr/bin/env bash
# Builds hack/kstatus (a one-file program around sigs.k8s.io/cli-utils' kstatus: the status Flux
# and kpt compute for any object) from the Go module proxy into a cache outside the repository,
# keyed by the cli-utils version and the program's source, so only the first build pays.
#
#   hack/build-kstatus.sh            # prints the path of the binary when done
#
# A wrapper module in the cache requires cli-utils; k8s.io/* are pinned to the release the
# control plane is built from (the proxy serves that one; cli-utils' own go.mod names older).
set -euo pipefail

CLI_UTILS_VERSION=${CLI_UTILS_VERSION:-v0.37.2}
K8S_MODULES_VERSION=${K8S_MODULES_VERSION:-v0.37.2}
SRC="$(cd "$(dirname "$0")" && pwd)/kstatus/main.go"
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
key=$(sha256sum "$SRC" | cut -c1-12)
OUT="$CACHE/kstatus/cli-utils-$CLI_UTILS_VERSION-k8s-$K8S_MODULES_VERSION-$key"
BIN="$OUT/kstatus"

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "error: 'go' is required to build kstatus" >&2; exit 1; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9 # two concurrent callers build once
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mod="$OUT/module"
rm -rf "$mod" && mkdir -p "$mod"
cp "$SRC" "$mod/main.go"
cat >"$mod/go.mod" <<MOD
module tauon.dev/kstatus

go 1.26.0

require (
	sigs.k8s.io/cli-utils $CLI_UTILS_VERSION
	k8s.io/api $K8S_MODULES_VERSION
	k8s.io/apimachinery $K8S_MODULES_VERSION
	k8s.io/client-go $K8S_MODULES_VERSION
)
MOD
cd "$mod"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
started=$(date +%s)
echo "building kstatus (cli-utils $CLI_UTILS_VERSION) into $OUT" >&2
go mod tidy >&2
go build -trimpath -ldflags="-s -w" -o "$BIN.tmp" . >&2
mv "$BIN.tmp" "$BIN"
echo $(( $(date +%s) - started )) >"$OUT/build-seconds"
echo "$BIN"
