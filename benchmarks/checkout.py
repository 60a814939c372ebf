"""Import conceptkit from this checkout where it is not installed (the device machine): the benchmarks' first
import. ``ROOT`` is the repository root; the root folders are mapped the way setuptools' package-dir maps them."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "benchmarks")) if p not in sys.path]
import conceptkit  # noqa: E402

if not (Path(conceptkit.__path__[0]) / "annotators").exists():
    conceptkit.__path__.append(str(ROOT))
