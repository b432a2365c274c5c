#!/usr/bin/env bash
# Builds SeaweedFS (the S3-compatible object store the local platform runs as Tauon's artifact
# store) from the Go module proxy into a cache outside the repository keyed by version, so only
# the first run on a machine pays for the build (~5 min on 2 cores).
#
#   hack/build-seaweedfs.sh             # prints the directory holding bin/weed
set -euo pipefail

VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
MODULE=github.com/seaweedfs/seaweedfs
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
OUT="$CACHE/seaweedfs/$VERSION"
BIN="$OUT/bin/weed"

if [ -x "$BIN" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "error: 'go' is required to build SeaweedFS" >&2; exit 1; }
mkdir -p "$OUT/bin"
exec 9>"$OUT/.lock"
flock 9 # two concurrent sessions build once
if [ -x "$BIN" ]; then echo "$OUT"; exit 0; fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
started=$(date +%s)
# SeaweedFS's go.mod has a replace directive, which `go install pkg@version` refuses: a wrapper
# module requires it at the version and repeats the replace.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<MOD
module tauon.dev/build/seaweedfs

go 1.26

require $MODULE $VERSION

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
MOD
cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
GO
echo "building SeaweedFS $VERSION into $OUT/bin; the first build takes about 5 minutes" >&2
(cd "$work" && go mod tidy -e >&2 2>/dev/null || true; cd "$work" && go build -tags tools -trimpath -ldflags="-s -w" -o "$BIN.tmp" "$MODULE/weed" >&2)
mv "$BIN.tmp" "$BIN"
echo $(( $(date +%s) - started )) >"$OUT/build-seconds"
echo "$OUT"
