#!/bin/sh
# The one way Tauon's images install Python packages; the Dockerfile runs it, and so does
# tests/unit/ship/test_image_install.py (which is how the image is tested without an engine).
#
#   docker/install.sh operator VENV WHEEL_DIR   # the operator: pinned lock, --no-deps, no torch
#   docker/install.sh runtime  VENV WHEEL_DIR   # the runtime: the wheel and pyproject's pins (torch)
#   docker/install.sh edge     VENV WHEEL_DIR   # the runtime-edge: pinned lock, --no-deps, no torch
#
# Environment: PIP_EXTRA_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu for a CPU-only
# torch in the runtime image) and any other PIP_* setting pass through to pip.
set -eu
target=$1 venv=$2 wheels=$3
here=$(dirname "$0")
"${PYTHON:-python3}" -m venv "$venv"
pip="$venv/bin/python -m pip --no-cache-dir --disable-pip-version-check --no-input"
case "$target" in
  operator)
    $pip install --no-deps -r "$here/requirements-operator.txt"
    $pip install --no-deps "$wheels"/tauon-*.whl
    ;;
  runtime)
    $pip install "$wheels"/tauon-*.whl
    ;;
  edge)
    $pip install --no-deps -r "$here/requirements-edge.txt"
    $pip install --no-deps "$wheels"/tauon-*.whl
    ;;
  *)
    echo "usage: $0 operator|runtime|edge VENV WHEEL_DIR" >&2
    exit 2
    ;;
esac
# Every requirement satisfied, nothing missing from the lock. The operator and the edge leave
# out the rest of the project's dependencies on purpose (tauon is one distribution): only
# those may be missing.
if ! report=$($pip check 2>&1); then
  broken=$(printf '%s\n' "$report" | grep -v '^tauon [^ ]* requires ' || true)
  if [ "$target" = runtime ] || [ -n "$broken" ]; then
    printf '%s\n' "$report" >&2
    exit 1
  fi
fi
# No installer left in the final environment.
$pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true
find "$venv" -name '__pycache__' -type d -prune -exec rm -rf {} +
