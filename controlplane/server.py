"""``stella-sched api``: run the control plane with uvicorn on 127.0.0.1."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from agents.settings import Settings
from controlplane.app import create_app
from controlplane.config import ApiConfig, ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stella-sched api", description="the HTTP control plane")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1 or $STELLA_API_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default $STELLA_API_PORT or 8080)")
    p.add_argument(
        "--tokens", default=None, help="access file: tokens and webhook secrets ($STELLA_API_TOKENS)"
    )
    p.add_argument("--max-body-bytes", type=int, default=None, help="request body limit (default 1 MiB)")
    p.add_argument(
        "--projector-group", default=None, help="consumer group whose checkpoints min_position reads"
    )
    p.add_argument("--log-level", default=None, help="default $STELLA_LOG_LEVEL or INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    level = (args.log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = ApiConfig.from_env(
            settings,
            host=args.host,
            port=args.port,
            tokens_path=args.tokens,
            max_body_bytes=args.max_body_bytes,
            projector_group=args.projector_group,
        )
        app = create_app(settings, config=config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not config.tokens_path:
        logging.getLogger("controlplane").warning(
            "no access file (--tokens / STELLA_API_TOKENS): every API call answers 401"
        )
    uvicorn.run(app, host=config.host, port=config.port, log_level=level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
