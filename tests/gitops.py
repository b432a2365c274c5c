"""How GitOps tools judge our objects, as the tools themselves compute it: Argo CD's Lua health
check (charts/tauon/health/tauon.lua, run by a real Lua interpreter) and Flux's kstatus
(sigs.k8s.io/cli-utils, built from the Go module proxy by hack/build-kstatus.sh)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARGOCD_SCRIPT = REPO / "charts" / "tauon" / "health" / "tauon.lua"


def argocd_health() -> Callable[[dict], dict]:
    """obj -> {"status": Healthy | Progressing | Degraded | Suspended, "message": ...}."""
    from lupa import LuaRuntime  # dev extra

    lua = LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval(f"function(obj) {ARGOCD_SCRIPT.read_text()} end")

    def run(obj: dict) -> dict:
        result = check(lua.table_from(obj, recursive=True))
        return {"status": result["status"], "message": result["message"]}

    return run


def kstatus() -> Callable[[dict], dict]:
    """obj -> {"status": InProgress | Current | Failed | ..., "message": ...}; the first call
    on a machine builds the binary (cached by version, like the control plane)."""
    built = subprocess.run([str(REPO / "hack" / "build-kstatus.sh")], check=True,
                           stdout=subprocess.PIPE, text=True)
    binary = built.stdout.strip().splitlines()[-1]

    def run(obj: dict) -> dict:
        out = subprocess.run([binary], input=json.dumps(obj), capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout)

    return run
