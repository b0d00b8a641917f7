"""Where the workers' metric files go. Kept apart from the metrics themselves: prometheus-client
decides at import whether it runs in multiprocess mode, so this is set before it is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory(directory: Path | None = None) -> Path:
    """The directory this run's workers write their metric files to, emptied (old workers' files
    would add up forever): `directory`, or a new temporary one."""
    target = directory if directory is not None else Path(tempfile.mkdtemp(prefix="sy-metrics-"))
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.db"):
        old.unlink()
    os.environ[ENV] = str(target)
    return target
