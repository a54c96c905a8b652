"""Create the project's topics on a broker (idempotent). `python -m agents.topology_admin --help`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.topology import TopicSpec, topics


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(s.name, s.partitions, 1, topic_configs=dict(s.config)) for s in missing]
            )
        return [s.name for s in missing]
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the scheduler's Kafka topics if they are missing.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap address")
    parser.add_argument("--prefix", default="", help="topic name prefix (isolates environments)")
    parser.add_argument("--partitions", type=int, default=None, help="partitions per topic (default 6)")
    args = parser.parse_args(argv)
    created = asyncio.run(ensure_topics(args.bootstrap, topics(args.prefix, args.partitions)))
    print(
        f"[ops] topics: {len(created)} created, {len(topics(args.prefix)) - len(created)} already there",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
