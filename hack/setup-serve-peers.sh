#!/usr/bin/env bash
# The serving peers of bench/serve_throughput.py --peers: KServe's Python model server and
# LitServe, each in its own environment (their pins are theirs: FastAPI, uvicorn, grpcio …),
# cached outside the repository keyed by version. torch, safetensors and numpy come from the
# project's environment through a .pth file placed after the peer's own site-packages, so both
# peers run the very same torch build as `tauon-runtime serve`.
#
#   hack/setup-serve-peers.sh kserve litserve     # prints one "name python" line per peer
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}
KSERVE_VERSION=${KSERVE_VERSION:-0.21.0}
LITSERVE_VERSION=${LITSERVE_VERSION:-0.2.19}
base=$(hack/setup-venv.sh)
base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for peer in "$@"; do
  case "$peer" in
    kserve) req="kserve==$KSERVE_VERSION" ;;
    litserve) req="litserve==$LITSERVE_VERSION" ;;
    *) echo "error: unknown peer '$peer' (kserve, litserve)" >&2; exit 2 ;;
  esac
  venv="$CACHE/peers/${req/==/-}-$(basename "$base")"  # the .pth ties it to one base
  mkdir -p "$CACHE/peers"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "creating $venv ($req)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "$req" >&2
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$base_site" >"$site/zz-tauon-torch.pth"  # after the peer's own packages
    touch "$venv/.complete"
  fi
  exec 9>&-
  echo "$peer $venv/bin/python"
done
