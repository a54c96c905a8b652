"""Our impact fold alone, for the peer comparison: ``python -m bench.fold_app`` (env as for the worker).

The same faust app the worker builds, but only the stages of the fold are registered: ingest (inventory →
index-updates / catalog / impacts; advisories → impact-requests), index (index + resolution → impacts) and
tenant (catalog + windows → jobs and run plans). No job runner, signer or projector compete for the CPU,
so it does what the Quix peer does, plus the catalog and run-plan records the peer leaves out.
"""

from __future__ import annotations

import sys

from agents import index_stage, ingest_stage, tenant_stage
from agents.pipeline import Pipeline
from agents.settings import Settings
from agents.worker import JsonLogWorker


def main() -> int:
    settings = Settings.from_env()
    pipe = Pipeline.create(settings)
    ingest_stage.register(pipe)
    index_stage.register(pipe)
    tenant_stage.register(pipe)
    # The worker's logging setup, not faust's: faust's console spinner sets the root logger to DEBUG, so
    # every debug call of aiokafka and faust (one per record sent) built a LogRecord (5 % of the CPU in
    # py-spy, bench/NOTES.md); the worker's JSON logging puts the root back at the configured level.
    worker = JsonLogWorker(pipe.app, loglevel=settings.log_level.lower())
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
