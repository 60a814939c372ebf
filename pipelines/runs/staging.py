"""A run directory that appears only when the run succeeds.

Outputs go to ``<parent>/.<name>.tmp-<id>/``; ``commit()`` swaps it into place (an existing run of the same name is
moved aside and removed only after the swap), ``discard()`` deletes it. A failed or killed run therefore never
leaves a half-written directory under the run's name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class StagedRun:
    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> "StagedRun":
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def path(self, *parts: str) -> Path:
        return self.tmp.joinpath(*parts)

    def commit(self) -> Path:
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
