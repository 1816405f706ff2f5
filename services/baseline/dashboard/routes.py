"""Serves the NOC dashboard: ``/`` and its static files, no key needed (the data calls need one)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/dashboard/{path:path}")
def static(path: str) -> FileResponse:
    """Dashboard assets; nothing outside the dashboard folder is reachable."""
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC.resolve()) or not target.is_file() or target.suffix not in _TYPES:
        raise HTTPException(404, "not found")
    return FileResponse(target, media_type=_TYPES[target.suffix], headers={"Cache-Control": "max-age=300"})
