"""The one exception a request handler raises for input the client must fix."""

from __future__ import annotations

__all__ = ["BadInput"]


class BadInput(ValueError):
    """A request the client must fix; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
