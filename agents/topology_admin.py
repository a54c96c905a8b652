"""Create the project's topics on a broker (idempotent). `python -m agents.topology_admin --help`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.topology import TopicSpec, faust_topics, topics


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 60.0) -> list[str]:
    """Create the topics that do not exist yet and wait until the broker lists them all; return the
    names created. aiokafka reports per-topic failures in the response rather than raising, and a topic
    still being deleted cannot be re-created yet, so this retries until every topic is there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    created: list[str] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            existing = set(await admin.list_topics())
            missing = [s for s in specs if s.name not in existing]
            if not missing:
                return created
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topics still missing after {timeout:.0f} s: {[s.name for s in missing]}")
            response = await admin.create_topics(
                [NewTopic(s.name, s.partitions, 1, topic_configs=dict(s.config)) for s in missing]
            )
            codes = {name: code for name, code, *_ in response.topic_errors}
            created += [s.name for s in missing if codes.get(s.name) == 0]
            failed = {name for name, code in codes.items() if code not in (0, 36)}  # 36: already exists
            if failed:
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create the scheduler's Kafka topics, and the faust app's changelog and leader topics, if "
        "they are missing."
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap address")
    parser.add_argument("--prefix", default="", help="topic name prefix (isolates environments)")
    parser.add_argument("--partitions", type=int, default=None, help="partitions per topic (default 6)")
    parser.add_argument(
        "--app-id",
        default=os.environ.get("STELLA_APP_ID", "stella-sched"),
        help="faust app id (STELLA_APP_ID): its table changelogs and leader topic are created too",
    )
    args = parser.parse_args(argv)
    specs = topics(args.prefix, args.partitions) + faust_topics(args.app_id, args.partitions)
    created = asyncio.run(ensure_topics(args.bootstrap, specs))
    print(f"[ops] topics: {len(created)} created, {len(specs) - len(created)} already there", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
