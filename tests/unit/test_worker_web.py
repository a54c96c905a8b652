"""Issue 14 #1: the worker's web port served faust's default views, among them ``/table/<table>/<key>``
with every tenant's table values, without login. It must serve only /healthz, /readyz and /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from agents.settings import Settings
from agents.worker import WORKER_PATHS, build


async def test_the_worker_port_serves_only_health_and_metrics(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "worker"), signing_key="", topic_prefix="webtest.")
    pipe = build(settings)
    web: Any = pipe.app.web
    web.init_server()  # what the worker does when its web service starts: apply blueprints, add pages
    paths = {getattr(r, "canonical", "") for r in web.web_app.router.resources()}
    assert paths == set(WORKER_PATHS)
    async with TestClient(TestServer(web.web_app)) as client:
        for path in ("/table/catalog/acme/", "/table/images/", "/router/", "/", "/graph/", "/stats/"):
            response = await client.get(path)
            assert response.status == 404, path
        assert (await client.get("/healthz")).status == 200
