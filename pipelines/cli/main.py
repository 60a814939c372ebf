"""The ``conceptkit`` command line. Exit codes: 0 success, 1 the run failed, 2 a user error (input, config, flags).

Every command ends by saying what it did and where its results are. Logging is configured here, once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from conceptkit import __version__

logger = logging.getLogger("conceptkit")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


# (flag, config key, argparse kwargs): every build flag overrides the YAML key beside it.
BUILD_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--items", "items.path", dict(metavar="PATH", help="items file: .parquet, .csv or .jsonl")),
    ("--format", "items.format", dict(choices=["auto", "parquet", "csv", "jsonl"], help="items file format (default: from the extension)")),
    ("--id-column", "items.id_column", dict(metavar="COL", help="item id column (default 'id'; row numbers when absent)")),
    ("--text-column", "items.text_column", dict(metavar="COL", help="text column (default 'text')")),
    ("--image-column", "items.image_column", dict(metavar="COL", help="image items: column of image paths (relative to the items file); needs a CLIP-type --embedding-model")),
    ("--allow-outside-paths", "items.allow_outside_paths", dict(action="store_const", const=True, help="image items: allow paths outside the items file's folder")),
    ("--label-column", "items.label_column", dict(metavar="COL", help="class label column (default 'label')")),
    ("--classes", "items.classes_file", dict(metavar="FILE", help="class names, one per line (needed when items are unlabelled)")),
    ("--holdout", "items.holdout", dict(type=float, metavar="F", help="share of each class's labelled items held out as the test split when the items have no split column (default 0.2; 0 = none)")),
    ("--out", "out", dict(metavar="DIR", help="run directory to write (default runs/<name>)")),
    ("--name", "name", dict(help="run name (used when --out is not given)")),
    ("--cache-dir", "cache_dir", dict(metavar="DIR", help="LLM and embedding caches (default: <out parent>/.cache)")),
    ("--llm-base-url", "llm.base_url", dict(metavar="URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: start the embedded model)")),
    ("--llm-model", "llm.model", dict(metavar="NAME", help="model name at that endpoint (required with --llm-base-url)")),
    ("--llm-api-key-env", "llm.api_key_env", dict(metavar="VAR", help="name of the environment variable holding the API key (the key itself is never passed on the command line)")),
    ("--llm-concurrency", "llm.concurrency", dict(type=int, metavar="N", help="concurrent LLM requests, and the embedded model's slots (default: one per request, 16 to 32, embedded; 8 remote)")),
    ("--llm-timeout", "llm.timeout_s", dict(type=float, metavar="S", help="per-request timeout in seconds (default 120; 900 for the embedded model)")),
    ("--llm-max-retries", "llm.max_retries", dict(type=int, metavar="N", help="retries on 429/5xx/timeouts/connection errors (default 4)")),
    ("--llm-max-retry-after", "llm.max_retry_after_s", dict(type=float, metavar="S", help="longest Retry-After wait honoured on a 429, in seconds (default 60; each wait counts as a retry)")),
    ("--llm-rpm", "llm.requests_per_minute", dict(type=float, metavar="N", help="client-side limit on requests per minute")),
    ("--llm-tpm", "llm.tokens_per_minute", dict(type=float, metavar="N", help="client-side limit on tokens per minute")),
    ("--max-cost", "llm.max_cost", dict(type=float, metavar="USD", help="stop calling the LLM before the estimated spend exceeds this (prices in llm.prices)")),
    ("--frequency-penalty", "llm.frequency_penalty", dict(type=float, help="OpenAI frequency_penalty (discourages repeated tokens)")),
    ("--presence-penalty", "llm.presence_penalty", dict(type=float, help="OpenAI presence_penalty")),
    ("--temperature", "llm.temperature", dict(type=float, help="sampling temperature (default 0.7)")),
    ("--samples", "llm.samples", dict(type=int, metavar="N", help="samples per prompt (default 1)")),
    ("--seed", "llm.seed", dict(type=int, help="sampling seed (sample i uses seed+i)")),
    ("--llm-port", "llm.embedded_port", dict(type=int, metavar="PORT", help="port of the embedded model on 127.0.0.1 (default 8765)")),
    ("--prompt-family", "generation.family", dict(choices=["text", "labo", "lfcbm", "custom"], help="prompt templates (default 'text')")),
    ("--domain", "generation.domain", dict(help="what the data is, e.g. 'news articles' (fills {domain})")),
    ("--concepts-per-prompt", "generation.concepts_per_prompt", dict(type=int, metavar="N", help="concepts asked for per prompt (default 10)")),
    ("--examples-per-class", "generation.examples_per_class", dict(type=int, metavar="N", help="representative train items of a class shown with every question about it (default 0: class names only)")),
    ("--classes-per-request", "generation.classes_per_request", dict(type=int, metavar="N", help="ask each question of N classes in one request, answers keyed per class (default 1)")),
    ("--rounds", "generation.rounds", dict(type=int, metavar="N", help="generation rounds: after each, contrastive questions for the weakest classes on a validation part of the train split (default 1)")),
    ("--score-dtype", "annotation.score_dtype", dict(choices=["float32", "float16"], help="how the full score vectors are stored: float32 (default) or float16 (half the size)")),
    ("--score-layout", "annotation.score_layout", dict(choices=["list", "packed"], help="score vectors as a list of numbers (default) or packed bytes per item (4x faster to write; read with score_matrix)")),
    ("--mine-per-class", "generation.mine_per_class", dict(type=int, metavar="N", help="candidate phrases mined per class from the labelled train items, no LLM (default 100; 0 = off)")),
    ("--embedding-model", "embedding.model", dict(metavar="NAME", help="sentence-transformers model name or path (default packaged:all-MiniLM-L6-v2)")),
    ("--embedding-device", "embedding.device", dict(metavar="DEV", help="torch device for embeddings: cpu (default), cuda, mps")),
    ("--embedding-backend", "embedding.backend", dict(choices=["torch", "onnx", "onnx-int8"], help="torch (default), or ONNX Runtime on the CPU: onnx (fp32) or onnx-int8 (quantised, fastest; exported once from the local model)")),
    ("--embedding-threads", "embedding.threads", dict(type=int, metavar="N", help="torch threads per worker process (default 1: more collapse under contention)")),
    ("--k-per-class", "selection.k_per_class", dict(type=int, metavar="K", help="concepts selected per class (default 15)")),
    ("--global-budget", "selection.global_budget", dict(type=int, metavar="N", help="total concepts selected over all classes (with or instead of --k-per-class)")),
    ("--alpha", "selection.alpha", dict(type=float, help="weight of discriminability (default 1.0)")),
    ("--beta", "selection.beta", dict(type=float, help="weight of coverage (default 1.0)")),
    ("--discriminability", "selection.discriminability", dict(choices=["items", "labo"], help="items: how well a concept's scores separate a class's train items from the others' (AUC; default); labo: LaBo's score from the class means")),
    ("--direction", "selection.direction", dict(choices=["off", "soft", "strongest"], help="whether a concept's discriminability counts for a class it does not point at (default soft)")),
    ("--top-k", "annotation.top_k", dict(type=int, metavar="K", help="top concepts stored per item (default 5)")),
    ("--runner", "runner.runner", dict(choices=["direct", "dask", "beam"], help="direct (default: in-process, no network), dask, or beam (any Beam runner, from --beam-arg)")),
    ("--beam-arg", "runner.beam_args", dict(action="append", metavar="ARG", help="a Beam pipeline option passed through with --runner beam, e.g. --beam-arg=--runner=FlinkRunner (repeatable)")),
    ("--direct-num-workers", "runner.direct_num_workers", dict(type=int, metavar="N", help="worker processes for the direct runner (default 1)")),
    ("--dask-scheduler", "runner.dask_scheduler", dict(metavar="ADDR", help="dask.distributed scheduler, e.g. tcp://HOST:8786 (with --runner dask)")),
    ("--dask-workers", "runner.dask_workers", dict(type=int, metavar="N", help="with --runner dask and no scheduler: start a local cluster of N worker processes on 127.0.0.1")),
]


def _metavar(kwargs: dict[str, Any]) -> str | None:
    """A readable placeholder for flags that name none (argparse would show the config key, LLM.SEED)."""
    if "choices" in kwargs:
        return None
    return {int: "N", float: "X"}.get(kwargs.get("type"), "TEXT")


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build a concept dataset from labelled (or class-listed) items",
        description="Generate candidate concepts per class with an LLM, filter and select them, embed and index "
        "them, and annotate every item. Writes candidates/concepts/rejects Parquet, annotations/, index/, "
        "labelstudio/ and manifest.json into the run directory, which appears only when the run succeeds.",
    )
    p.add_argument("--config", metavar="YAML", help="build config; the flags below override its keys")
    for flag, key, kwargs in BUILD_FLAGS:
        p.add_argument(flag, dest=key, default=None, **{"metavar": _metavar(kwargs), **kwargs})
    p.add_argument("--no-cache", dest="llm.cache", action="store_const", const=False, default=None, help="neither read nor write the LLM cache")
    p.add_argument("--no-embedding-cache", dest="embedding.cache", action="store_const", const=False, default=None, help="do not cache embeddings by (model, content hash)")
    p.add_argument("--no-llm-share-prefix", dest="llm.share_prefix", action="store_const", const=False, default=None,
                   help="the embedded model: do not copy the prompts' shared prefix into every slot first")
    p.add_argument("--refresh-cache", dest="llm.refresh_cache", action="store_const", const=True, default=None, help="call the LLM again and overwrite cached answers")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from conceptkit.pipelines.build import RunError, UserError, format_summary, run_build
    from conceptkit.pipelines.config import ConfigError, load_config

    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if "." in key or key in ("out", "name", "cache_dir"):
            if value is not None:
                _set(overrides, key, value)
    try:
        cfg = load_config(args.config, overrides)
        summary = run_build(cfg, argv=sys.argv[1:])
    except (UserError, ConfigError) as exc:
        print(f"conceptkit build: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"conceptkit build: failed: {exc} (nothing was written to the run directory)", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    """Re-select an existing run's concepts with other budgets or weights, from its manifest's config."""
    import json
    from pathlib import Path

    from conceptkit.pipelines.build import RunError, UserError, format_summary, run_build
    from conceptkit.pipelines.config import BuildConfig, ConfigError

    manifest = Path(args.run) / "manifest.json"
    try:
        saved = json.loads(manifest.read_text())["config"]
    except (OSError, ValueError, KeyError):
        print(f"conceptkit select: error: {manifest} is missing or not a conceptkit manifest", file=sys.stderr)
        return 2
    selection = {k: v for k, v in {"k_per_class": args.k_per_class, "global_budget": args.global_budget,
                                   "alpha": args.alpha, "beta": args.beta, "optimizer": args.optimizer,
                                   "discriminability": args.discriminability}.items()
                 if v is not None}
    if args.use_review:
        from conceptkit.pipelines.review.apply import has_review

        if not has_review(args.run):
            print(f"conceptkit select: error: {args.run}: no review data (verified.parquet or "
                  "human_candidates.parquet); pull some with `conceptkit ls pull` first", file=sys.stderr)
            return 2
        # the review data is read before the build replaces the run (and carried into the new one)
        selection["review_from"] = str(Path(args.run).resolve())
    else:
        selection["review_from"] = None
    saved["selection"] = {**saved.get("selection", {}), **selection}
    saved["out"] = args.out or args.run
    saved["llm"] = {**saved.get("llm", {}), "refresh_cache": False, "cache": True}
    try:
        cfg = BuildConfig.model_validate(saved)
        # The LLM answers come from the cache: a request that is not cached is an error, not a new call.
        summary = run_build(cfg, argv=sys.argv[1:], cached_only=True)
    except (UserError, ConfigError, ValueError) as exc:
        print(f"conceptkit select: error: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"conceptkit select: failed: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary).replace("conceptkit build:", "conceptkit select:", 1))
    return 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    """Annotate new or held-out items with an existing run's concepts (no LLM), into the run."""
    from conceptkit.pipelines.annotation.refresh import RunChangedError, RunCheckError, refresh_run
    from conceptkit.pipelines.config import ConfigError
    from conceptkit.pipelines.readers.items import InputError
    from conceptkit.pipelines.runs.run import RunNotFound, open_run
    from conceptkit.schemas.io import SchemaMismatch

    try:
        open_run(args.run)
        summary = refresh_run(args.run, args.items, split=args.split,
                              columns=_columns(args))
    except (RunNotFound, RunCheckError, InputError, ConfigError, SchemaMismatch, ValueError) as exc:
        print(f"conceptkit annotate: error: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        return 2
    except RunChangedError as exc:
        print(f"conceptkit annotate: failed: {exc}", file=sys.stderr)
        return 1
    c = summary.counts
    what = (f"{c['new']} new and {c['changed']} changed items annotated, {c['unchanged']} unchanged, "
            f"{c['rejected']} rejected")
    where = f"annotations/ and README.md in {summary.out}" if summary.changed else "nothing written"
    print(f"conceptkit annotate: {args.items} -> {summary.out}: {what} ({where})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """Bottleneck accuracy of a run's concepts against baselines on held-out items."""
    from conceptkit.pipelines.evaluation.run import EvalError, evaluate_run, format_eval

    try:
        shots = [int(s) for s in args.shots.split(",") if s.strip()]
    except ValueError:
        print(f"conceptkit eval: error: --shots must be comma-separated integers, got {args.shots!r}", file=sys.stderr)
        return 2
    try:
        result = evaluate_run(args.run, test_file=args.test, compare=args.compare or (), seeds=args.seeds,
                              shots=shots, nec=args.nec, out=args.out, tune_c=args.tune_c,
                              test_columns=_columns(args))
    except EvalError as exc:
        print(f"conceptkit eval: error: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        return 2
    print(format_eval(result))
    return 0


def _cmd_llm_serve(args: argparse.Namespace) -> int:
    from conceptkit.pipelines.generation.server import EmbeddedModelError, is_healthy, serve

    if is_healthy(args.port):
        print(f"conceptkit llm serve: an embedded LLM is already running on 127.0.0.1:{args.port}")
        return 0
    try:
        serve(args.port, parallel=args.parallel, threads=args.threads)
    except EmbeddedModelError as exc:
        print(f"conceptkit llm serve: error: {exc}", file=sys.stderr)
        return 2
    print("conceptkit llm serve: stopped")
    return 0


def _column_flags(parser: argparse.ArgumentParser, of: str) -> None:
    """--id-column / --text-column / --label-column for an items file read with a run's settings."""
    for what in ("id", "text", "label"):
        parser.add_argument(f"--{what}-column", metavar="COL", help=f"{what} column{of} (default: the run's)")


def _columns(args: argparse.Namespace) -> dict[str, str | None]:
    return {"id_column": args.id_column, "text_column": args.text_column, "label_column": args.label_column}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptkit", description="Build concept datasets for interpretable models.")
    parser.add_argument("--version", action="version", version=f"conceptkit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or log lines; errors and the final "
                        "summary only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    from conceptkit.pipelines.cli.explore import register as register_explore

    register_explore(sub)
    from conceptkit.pipelines.cli.labelstudio import register as register_ls

    register_ls(sub)
    select = sub.add_parser(
        "select",
        help="re-run concept selection of an existing run with other budgets or weights (no new LLM calls)",
        description="Rebuild RUN from its manifest's config with new selection parameters. Candidate concepts come "
        "from the LLM cache; a request that is not cached is an error.",
    )
    select.add_argument("run", metavar="RUN", help="an existing run directory")
    select.add_argument("--k-per-class", type=int, metavar="K", help="concepts per class")
    select.add_argument("--global-budget", type=int, metavar="N", help="total concepts")
    select.add_argument("--alpha", type=float, metavar="X", help="weight of discriminability")
    select.add_argument("--beta", type=float, metavar="X", help="weight of coverage")
    select.add_argument("--optimizer", choices=["naive", "lazy", "stochastic"])
    select.add_argument("--discriminability", choices=["items", "labo"],
                        help="items: AUC of a concept's scores over the class's train items (default); labo: LaBo's")
    select.add_argument("--out", metavar="DIR", help="write the new selection here instead of replacing RUN")
    select.add_argument("--use-review", action="store_true",
                        help="apply RUN's review data: concept-list verdicts (reject, edit, keep = pinned), concepts "
                             "reviewers typed, and per-concept precision from item review")
    select.set_defaults(func=_cmd_select)
    annotate = sub.add_parser(
        "annotate",
        help="annotate new or held-out items with an existing run's concepts (no LLM call)",
        description="Embed the items of FILE with the run's model (embeddings cached) and annotate them with the "
        "run's concepts, index and thresholds, into RUN: new items are added, changed ones re-annotated, unchanged "
        "ones left alone. The dataset card is rewritten with the new counts. The refresh DAG runs the same code.",
    )
    annotate.add_argument("run", metavar="RUN", help="an existing run directory")
    annotate.add_argument("--items", required=True, metavar="FILE", help="items file: .parquet, .csv or .jsonl")
    annotate.add_argument("--split", metavar="NAME",
                          help="split of these items, e.g. test (default: the file's split column, else train)")
    _column_flags(annotate, "")
    annotate.set_defaults(func=_cmd_annotate)
    ev = sub.add_parser(
        "eval",
        help="is this concept set any good? bottleneck accuracy against baselines on held-out items",
        description="Fit the same classifier (standardised features, logistic regression) on the run's concept "
        "scores (few-shot and all data, plus a sparse model at a fixed number of effective concepts), on the raw "
        "embeddings (black box), on random generic phrases, on other concept sets (--compare), and zero-shot on the "
        "class names; test on the run's held-out split or on --test FILE. Writes RUN/eval/eval.json, "
        "weights.parquet and report.html.",
    )
    ev.add_argument("run", metavar="RUN", help="an existing run directory (labelled items)")
    ev.add_argument("--test", metavar="FILE", help="test items (.parquet/.csv/.jsonl) instead of the run's test split")
    _column_flags(ev, " of --test")
    ev.add_argument("--compare", action="append", metavar="FILE",
                    help="another concept set (.txt one per line, .json list or {class: [...]}, concepts.parquet); "
                    "repeatable")
    ev.add_argument("--seeds", type=int, default=10, metavar="N", help="few-shot draws per shot count (default 10)")
    ev.add_argument("--shots", default="1,2,4,8,16", metavar="LIST", help="labelled items per class (default 1,2,4,8,16)")
    ev.add_argument("--nec", type=int, default=5, metavar="N", help="effective concepts per class of the sparse model (default 5)")
    ev.add_argument("--tune-c", action="store_true",
                    help="also fit the all-data bottleneck and black box with C chosen on a validation fifth of the "
                    "train split (rows bottleneck_tuned_c, black_box_tuned_c; the other rows keep C = 1)")
    ev.add_argument("--out", metavar="DIR", help="where to write (default RUN/eval)")
    ev.set_defaults(func=_cmd_eval)
    llm = sub.add_parser("llm", help="the embedded local LLM").add_subparsers(dest="llm_command", required=True)
    serve = llm.add_parser("serve", help="serve the embedded model on 127.0.0.1 in the foreground")
    serve.add_argument("--port", type=int, default=8765, metavar="PORT", help="port on 127.0.0.1 (default 8765)")
    serve.add_argument("--parallel", type=int, default=16, metavar="N", help="concurrent request slots (default 16)")
    serve.add_argument("--threads", type=int, default=None, metavar="N",
                       help="llama.cpp threads (default: all cores)")
    serve.set_defaults(func=_cmd_llm_serve)
    return parser


def _redact_record(record: logging.LogRecord) -> bool:
    """Every log line with the URLs in it made public: -vv logs request URLs (httpx), which may carry tokens."""
    from conceptkit.pipelines.generation.endpoint import redact

    message = record.getMessage()
    if "://" in message:
        record.msg, record.args = redact(message), ()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # Our own progress lines (one per stage or batch) show by default; libraries speak up with -v.
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours_level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose >= 2 else logging.INFO
    for ours in ("conceptkit", "dags"):
        logging.getLogger(ours).setLevel(ours_level)
    # apache_beam warns at import about optional GCP client libraries that a local build never uses.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("apitools not found"))
        handler.addFilter(_redact_record)
    if args.verbose < 2:
        for noisy in ("apache_beam", "httpx", "sentence_transformers", "openai"):
            logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
