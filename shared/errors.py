"""The one error shape every VoxGuard HTTP API answers with.

``{"error": {"code": "<machine code>", "message": "<human text>"}}`` (plus ``details`` for
validation errors), so clients and the NOC tooling parse one format across all services.
Kept apart from ``http.py`` so ``auth.py`` can raise it without importing the app factory.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import HTTPException


class ApiError(HTTPException):
    """An HTTPException with a stable machine-readable ``code``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details


def default_code(status_code: int) -> str:
    """``404`` -> ``not_found``: the code used when a plain HTTPException carries none."""
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status_code}"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


__all__ = ["ApiError", "default_code", "error_body"]
