"""Exit 0 when a MongoDB-wire server at the given URL answers ping."""

import sys

from pymongo import MongoClient

if __name__ == "__main__":
    client: MongoClient[dict[str, object]] = MongoClient(sys.argv[1], serverSelectionTimeoutMS=2000)
    try:
        client.admin.command("ping")
    except Exception as exc:  # any failure means "not yet"
        print(f"mongo not ready: {exc!r}", file=sys.stderr)
        sys.exit(1)
    finally:
        client.close()
