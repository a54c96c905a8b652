"""Exit 0 when a Kafka broker answers a metadata request at the given bootstrap address."""

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def _probe(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(_probe(sys.argv[1]), 5))
    except Exception as exc:  # any failure means "not yet"
        print(f"kafka not ready: {exc!r}", file=sys.stderr)
        sys.exit(1)
