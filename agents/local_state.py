"""The worker's durable local table state (rocksdb store): one owner per directory, and none kept after a crash.

With ``rocksdb://`` a table write goes to the local database at once and to its changelog through the
producer's buffer. A worker killed in between keeps, on disk, writes the changelog never got. Its input was
not committed (faust flushes the producer before every commit), so it is delivered again; but the position
guard (``streams/guard.py``) finds it already absorbed in the local value and skips it, so the changelog
would stay without that write for good, and the next owner of the partition would recover a table that
lacks it (a lost index entry is a lost impact). Kafka Streams has the same hazard and answers it the same
way under exactly-once: local state is trusted only after a clean shutdown.

So a worker marks its data directory *dirty* before faust opens any table and clears the mark only after
faust has stopped cleanly (producer flushed, offsets committed). A worker that finds the mark (the previous
process was killed or crashed) deletes its local tables and recovers them from the changelogs, as the memory
store always does. A clean restart reads only the changelog tail past each partition's persisted offset.

The directory is also locked (``flock``, released by the kernel even after SIGKILL): two workers on one
directory would share RocksDB files; the second one stops with a message naming the directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("stella.local_state")

LOCK = "worker.lock"
DIRTY = "dirty"


class DataDirInUse(SystemExit):
    pass


@dataclass
class LocalState:
    datadir: Path
    tabledir: Path
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def claim(self) -> bool:
        """Lock the directory; wipe the tables a killed or crashed process left; mark it dirty.
        True when local tables were deleted."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        handle = (self.datadir / LOCK).open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().decode(errors="replace").strip() or "?"
            handle.close()
            raise DataDirInUse(
                f"configuration error: the data directory {self.datadir} is in use by another worker "
                f"(pid {owner}); give every worker its own STELLA_WORKER_NAME (or STELLA_DATA_DIR)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()).encode())
        handle.flush()
        self._lock = handle
        wiped = False
        if (self.datadir / DIRTY).exists() and self.tabledir.exists():
            log.warning(
                "the previous worker on %s did not stop cleanly: deleting its local tables, they are "
                "recovered from the changelogs",
                self.datadir,
            )
            shutil.rmtree(self.tabledir)
            wiped = True
        (self.datadir / DIRTY).touch()
        return wiped

    def release_clean(self) -> None:
        """faust has stopped cleanly: the local tables hold nothing the changelogs lack."""
        (self.datadir / DIRTY).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
