"""Shared fixtures: the demo data, a loopback fake LLM with answers for the demo classes, build helpers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
DEMO_ITEMS = ROOT / "examples" / "demo" / "items.csv"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Concepts a good LLM might give for the demo classes (none contains its class name).
DEMO_ANSWERS = {
    "cooking": ["oven temperature", "fresh ingredients", "chopping vegetables", "baking bread", "spices", "frying pan", "recipe steps", "simmering sauce"],
    "sports": ["final score", "team practice", "goalkeeper", "marathon runners", "tennis serve", "league match", "coach", "swimming laps"],
    "weather": ["heavy rain", "forecast", "snowfall", "heat wave", "thunderstorm", "humidity", "strong wind", "cloudy sky"],
    "travel": ["flight delay", "hotel booking", "passport control", "luggage", "sightseeing tour", "train station", "tourist map", "boarding pass"],
    "technology": ["software update", "smartphone", "laptop battery", "wifi network", "mobile app", "cloud storage", "charging cable", "computer screen"],
    "music": ["guitar chords", "live concert", "album release", "singing voice", "playlist", "orchestra", "drummer", "concert hall"],
}


def pytest_configure(config) -> None:
    import os

    # Beam and HF libraries must never reach for the network in tests.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fake_llm():
    with FakeLLM(DEMO_ANSWERS) as fake:
        yield fake


def demo_rows(per_class: int | None = None, classes: list[str] | None = None) -> list[dict[str, str]]:
    with open(DEMO_ITEMS, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if classes:
        rows = [r for r in rows if r["label"] in classes]
    if per_class:
        seen: dict[str, int] = {}
        out = []
        for r in rows:
            if seen.get(r["label"], 0) < per_class:
                seen[r["label"]] = seen.get(r["label"], 0) + 1
                out.append(r)
        rows = out
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> Path:
    fieldnames = fieldnames or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def fake_overrides(fake: FakeLLM, tmp_path: Path, items_path: Path, **extra: Any) -> dict[str, Any]:
    """Config overrides for a build against ``fake`` writing under ``tmp_path``."""
    overrides: dict[str, Any] = {
        "out": str(tmp_path / "runs" / "t"),
        "cache_dir": str(tmp_path / "cache"),
        "items": {"path": str(items_path)},
        "llm": {"base_url": fake.base_url, "model": "fake-model", "max_retries": 2, "timeout_s": 10},
        "selection": {"k_per_class": 4},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value
    return overrides


# The real Label Studio server fixtures, shared by tests/annotators and tests/dags (label_studio_sync).
def build_annotation_variants(tmp_path: Path, items_path: Path, variants: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """One fake-LLM build of ``items_path`` per ``annotation`` override in ``variants``, under
    ``tmp_path/runs/<variant name>``; returns each run's directory."""
    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    runs = {}
    with FakeLLM(DEMO_ANSWERS) as fake:
        for name, annotation in variants.items():
            cfg = load_config(None, fake_overrides(fake, tmp_path, items_path, out=str(tmp_path / "runs" / name),
                                                   annotation=annotation))
            run_build(cfg)
            runs[name] = cfg.out_dir()
    return runs


from labelstudio_fixtures import ls, ls_server, tiny_run  # noqa: E402,F401
