"""The operator's process-wide state: one Controller, made at startup."""

from __future__ import annotations

from tauon_operator.controller import Controller

_controller: Controller | None = None


def controller() -> Controller:
    if _controller is None:
        raise RuntimeError("the operator has not started")
    return _controller


def install(ctl: Controller) -> None:
    global _controller
    _controller = ctl
