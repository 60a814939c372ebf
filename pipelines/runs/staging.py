"""A run directory that appears only when the run succeeds.

Outputs go to ``<parent>/.<name>.tmp-<id>/`` (marked as conceptkit's staging); ``commit()`` marks it as a run and
swaps it into place (an existing run of the same name is moved aside and removed only after the swap),
``discard()`` deletes it. A failed run never leaves a half-written directory under the run's name; what a killed
one leaves beside it, the next writer of the run removes (``guard.RunLock``). Callers check ``--out`` with
``guard.check_output_dir`` first: ``commit`` replaces only an empty directory or a run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from conceptkit.pipelines.runs.guard import STAGING_MARKER, is_run_dir, write_run_marker, write_staging_marker


class StagedRun:
    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> "StagedRun":
        self.tmp.mkdir(parents=True)
        write_staging_marker(self.tmp)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def path(self, *parts: str) -> Path:
        return self.tmp.joinpath(*parts)

    def commit(self, run_id: str | None = None) -> Path:
        """Swap the staged directory in as ``out``; ``run_id`` marks it as a run (a refresh keeps its marker)."""
        if self.out.exists() and not (is_run_dir(self.out) or (self.out.is_dir() and not any(self.out.iterdir()))):
            raise FileExistsError(f"{self.out} is neither a conceptkit run nor empty; it was not replaced")
        if run_id is not None:
            write_run_marker(self.tmp, run_id)
        (self.tmp / STAGING_MARKER).unlink(missing_ok=True)
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
