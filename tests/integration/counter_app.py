"""A minimal faust worker for the foundation tests: counts messages per key in a changelog-backed table,
writes the count to MongoDB and to an output topic. Run: python tests/integration/counter_app.py worker"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faust
from pymongo import MongoClient

from agents.settings import Settings
from agents.shell import Output, apply_guarded

log = logging.getLogger("counter")
settings = Settings.from_env(web_port=0)
app = faust.App(settings.app_id, **settings.faust_config())
source = app.topic(settings.topic("counter-in"), key_serializer="raw", value_serializer="raw")
out = app.topic(settings.topic("counter-out"), key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", key_type=str, value_type=bytes)
mongo: MongoClient[dict[str, object]] = MongoClient(settings.mongo_url)
docs = mongo[settings.mongo_db]["counts"]


@app.agent(source)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        key = event.key
        name = key.decode()

        def fold(state: bytes | None, key: bytes = key) -> tuple[bytes, list[Output]]:
            n = int(state or b"0") + 1
            return str(n).encode(), [Output(out, key, str(n).encode())]

        message = event.message
        where = f"{message.topic}/{message.partition}@{message.offset}"
        if await apply_guarded(counts, name, event, fold):
            n = int(counts_state(name))
            log.info("counted %s=%d at %s; writing MongoDB", name, n, where)
            docs.replace_one({"_id": name}, {"_id": name, "count": n}, upsert=True)
            log.info("MongoDB has %s=%d", name, n)
        else:
            log.info("%s already counted (redelivered)", where)


def counts_state(name: str) -> bytes:
    from streams.guard import decode

    return decode(counts[name]).state or b"0"


if __name__ == "__main__":
    os.environ.setdefault("STELLA_LOG_LEVEL", "INFO")
    app.main()
