"""conceptkit: build concept datasets (LLM-proposed concepts, submodular selection, annotations, human review).

The public API, small and stable (see the README, "Python API")::

    import conceptkit
    run = conceptkit.build("configs/demo.yaml", out="runs/mine")   # what `conceptkit build` does
    run = conceptkit.Run.load("runs/mine")
    run.concepts                    # polars DataFrame, one row per concept
    run.annotations(split="test")   # polars (or backend="pyarrow"), one row per item
    run.search("heavy rain tomorrow")
    run.annotate("new_items.csv", split="test")   # the run's concepts, no LLM
    run.select(k_per_class=4, out="runs/mine-k4")  # reselect from the cached LLM answers
    run.evaluate(compare=["published.json"])       # conceptkit eval: accuracies against baselines
    from conceptkit.submodular import FacilityLocationSelection   # selection on its own

The one import namespace: the repository's design folders are installed as ``conceptkit.schemas`` (what the data
is) <- ``conceptkit.annotators`` (what attaches labels) <- ``conceptkit.pipelines`` (how the work runs). Importing
``conceptkit`` is cheap: the heavy parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "UserError", "build", "evaluate", "__version__"]

if TYPE_CHECKING:
    from conceptkit.api import Run, build, evaluate
    from conceptkit.pipelines.build import UserError


def __getattr__(name: str) -> Any:
    if name in ("Run", "build", "evaluate"):
        from conceptkit import api

        return getattr(api, name)
    if name == "UserError":
        from conceptkit.pipelines.build import UserError

        return UserError
    raise AttributeError(f"module 'conceptkit' has no attribute {name!r}")
