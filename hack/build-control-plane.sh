#!/usr/bin/env bash
# Builds the real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) and kwok from the Go module proxy into a cache outside the repository,
# keyed by version, so only the first build on a machine pays for it.
#
#   hack/build-control-plane.sh            # prints the bin directory when done
#
# k8s.io/kubernetes is consumed as a module: its go.mod points every k8s.io/* staging module
# at ./staging, so we pin each of them with a `replace` to the matching published v0.X.Y.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0} # the etcd server that k8s.io/kubernetes itself pins
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
# -r2: the binaries say their version (/version, `kubectl version`): Kueue refuses to start on
# an API server that reports the unstamped v0.0.0-master, and helm checks charts' kubeVersion.
OUT="$CACHE/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-r2"
BIN="$OUT/bin"
WANT=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

have_all() { for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' is required to build the control plane" >&2; exit 1; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9 # two concurrent setups build once
if have_all; then echo "$BIN"; exit 0; fi

staging_version="v0.${K8S_VERSION#v1.}"
mod="$OUT/module"
rm -rf "$mod" && mkdir -p "$mod/etcd" "$BIN"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# The list of staging modules is read from the kubernetes go.mod itself (those at v0.0.0).
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$OUT/kubernetes.json"
gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$OUT/kubernetes.json")
mapfile -t staging < <(awk '/^\tk8s\.io\/[^ ]+ v0\.0\.0$/ {print $1}' "$gomod")
{
  echo "module tauon.dev/control-plane"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
  echo ")"
} >"$mod/go.mod"
cat >"$mod/etcd/main.go" <<'GO'
// etcd, built from the server module at the version Kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cd "$mod"
started=$(date +%s)
echo "building the control plane ($K8S_VERSION) into $BIN; the first build takes a while" >&2
go mod tidy >&2
# What Kubernetes' own build (hack/lib/version.sh) stamps into every binary.
stamp="-s -w"
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean"
done
go build -trimpath -ldflags="$stamp" -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler >&2
go build -trimpath -ldflags="-s -w" -o "$BIN/etcd" ./etcd >&2
GOBIN="$BIN" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
have_all
echo $(( $(date +%s) - started )) >"$OUT/build-seconds" # read by bench/cluster_start.py
echo "$BIN"
