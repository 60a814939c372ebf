"""``conceptkit search``, ``conceptkit inspect`` and ``conceptkit card``: looking into a built run.

``register(subparsers)`` adds the three commands to the ``conceptkit`` parser. Exit codes as for the whole CLI: 0
done, 2 a user error (a missing directory or one that is not a run, a bad argument), printed as one line on stderr.
Each command ends with a line saying what it did.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from conceptkit.pipelines.runs.run import RunNotFound
from conceptkit.schemas.io import SchemaMismatch


def _user_error(command: str, exc: Exception) -> int:
    print(f"conceptkit {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def _cmd_search(args: argparse.Namespace) -> int:
    from conceptkit.pipelines.runs.search import SearchError, format_search, search_run

    try:
        result = search_run(args.run, args.query, k=args.k, items=args.items)
    except (RunNotFound, SearchError, SchemaMismatch) as exc:
        return _user_error("search", exc)
    print(format_search(result))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from conceptkit.pipelines.runs.inspection import inspect_run

    if args.rows < 0:
        return _user_error("inspect", ValueError(f"--rows must be >= 0, got {args.rows}"))
    try:
        text = inspect_run(args.run, max_rows=args.rows or None, max_score_items=args.max_score_items)
    except (RunNotFound, SchemaMismatch, ValueError) as exc:
        return _user_error("inspect", exc)
    print(text)
    print(f"\nconceptkit inspect: described {args.run}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from conceptkit.pipelines.runs.card import write_dataset_card

    try:
        path = write_dataset_card(args.run)
    except (RunNotFound, SchemaMismatch) as exc:
        return _user_error("card", exc)
    print(f"conceptkit card: wrote the dataset card {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``conceptkit search``, ``conceptkit inspect`` and ``conceptkit card`` to the CLI's subparsers."""
    search = subparsers.add_parser(
        "search", help="nearest concepts (and items) to a text query in a run",
        description="Embed the query with the run's embedding model and search the run's concept index. With "
        "--items also rank every annotated item (all splits, items added by `conceptkit annotate` too) by its text's "
        "embedding, read from the run's embedding cache (what is missing is embedded and cached).",
    )
    search.add_argument("run", metavar="RUN", help="run directory, e.g. runs/demo")
    search.add_argument("query", metavar="TEXT", help="what to look for, e.g. \"heavy rain tomorrow\"")
    search.add_argument("--k", type=int, default=10, metavar="K", help="results per list (default 10)")
    search.add_argument("--items", action="store_true", help="also list the nearest items")
    search.set_defaults(func=_cmd_search)

    inspect = subparsers.add_parser(
        "inspect", help="counts, concept frequencies, score distributions and class-concept tables of a run",
        description="Print a run's counts, how often each concept is among items' top concepts, per-concept score "
        "quantiles, the mean score of each concept per class, rejects, candidates, LLM use and timings.",
    )
    inspect.add_argument("run", metavar="RUN", help="run directory, e.g. runs/demo")
    inspect.add_argument("--rows", type=int, default=50, metavar="N",
                         help="rows per per-concept table (0: all; default 50)")
    inspect.add_argument("--max-score-items", type=int, default=50_000, metavar="N",
                         help="items read for score distributions and class means; more are sampled (default 50000)")
    inspect.set_defaults(func=_cmd_inspect)

    card = subparsers.add_parser(
        "card", help="(re)write a run's dataset card, README.md",
        description="Write README.md in the run directory: what it holds, how it was made, schemas, how to load it.",
    )
    card.add_argument("run", metavar="RUN", help="run directory, e.g. runs/demo")
    card.set_defaults(func=_cmd_card)
