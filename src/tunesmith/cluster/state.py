"""What this machine holds of a remote run, kept beside its records (`remote.json`): how much of
the job's output and metrics were copied, which folders were pulled while it ran. Changed only
under the run's lock, so two processes attached to or syncing one run take turns."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.files import write_text_atomically

STATE_FILE = "remote.json"
LOCK_FILE = "remote.lock"


@dataclass
class RemoteState:
    index: int = 0  # output chunks already copied into log.txt
    metrics_offset: int = 0  # bytes of the job's metrics.jsonl already appended here
    pulled: dict[str, str] = field(default_factory=dict)  # unit → signature, pulled while running
    bytes_fetched: int = 0

    @classmethod
    def load(cls, records: Path) -> RemoteState:
        path = Path(records) / STATE_FILE
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, records: Path) -> None:
        write_text_atomically(Path(records) / STATE_FILE, json.dumps(asdict(self)))


@contextmanager
def locked(records: Path) -> Iterator[None]:
    """The run's lock (an flock: released by the kernel if the holder dies)."""
    Path(records).mkdir(parents=True, exist_ok=True)
    with open(Path(records) / LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
