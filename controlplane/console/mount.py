"""Mount the console on the control plane: its pages, its static files and the live feed route."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from controlplane import routes_stream
from controlplane.console import pages

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.include_router(routes_stream.router)
    app.include_router(pages.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
