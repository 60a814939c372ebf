"""Generation statistics with the embedded model on the demo classes (configs/demo.yaml).

In: the demo config; ``--cache-dir`` (default benchmarks/.cache/demo-llm, a cache of its own so the first run
measures real generation time; a second run measures the cached path). Out: ``run_build`` into
benchmarks/.cache/demo/run and Markdown tables on stdout: per class, candidates proposed, accepted, merged
(duplicates and near-duplicates removed), rejected, selected; rejects by reason; tokens per accepted concept; wall
time split into LLM start-up, generation and the rest. ``--manifest PATH`` prints the same summary for an existing
run directory's manifest and candidates (e.g. runs/demo) without building.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"
LLM_PORT = 8791


def build_demo(cache_dir: Path, out: Path) -> dict:
    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml", {
        "out": str(out), "cache_dir": str(cache_dir), "llm": {"embedded_port": LLM_PORT},
        "items": {"path": str(ROOT / "examples" / "demo" / "items.csv")},
    })
    started = time.perf_counter()
    summary = run_build(cfg, argv=sys.argv)
    return {"wall_s": time.perf_counter() - started, "counts": summary.counts, "llm": summary.llm,
            "timings_s": summary.timings_s}


def cached_tokens(cache_path: Path, model: str) -> tuple[int, int, int]:
    """(answers, prompt tokens, completion tokens) stored in an LLM cache for ``model``."""
    conn = sqlite3.connect(cache_path)
    answers = [json.loads(a) for (a,) in conn.execute("SELECT answer FROM answers WHERE model = ?", (model,))]
    return len(answers), sum(a.get("prompt_tokens", 0) for a in answers), sum(a.get("completion_tokens", 0) for a in answers)


def report(run: Path, record: dict, *, cache_path: Path | None) -> str:
    import pyarrow.parquet as pq

    manifest = json.loads((run / "manifest.json").read_text())
    classes = manifest["input"]["classes"]
    cands = pq.read_table(run / "candidates.parquet").to_pylist()
    concepts = pq.read_table(run / "concepts.parquet").to_pylist()
    rejects = pq.read_table(run / "rejects.parquet").to_pylist()
    rows = []
    for c in classes:
        proposed = [x for x in cands if x["classes"][:1] == [c]]  # the first class is the one that proposed it
        rows.append((
            c,
            len(proposed),
            sum(x["status"] == "accepted" for x in proposed),
            sum(x["status"] == "accepted" and c in x["classes"] for x in cands),
            sum(x["status"] == "merged" for x in proposed),
            sum(x["status"] == "rejected" for x in proposed),
            sum(c in x["classes"] for x in concepts),
        ))
    lines = ["| class | proposed | accepted (own) | accepted incl. shared | merged (duplicates) | rejected | selected |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in r) + " |")
    tot = [sum(r[i] for r in rows) for i in range(1, 7)]
    tot[2] = sum(x["status"] == "accepted" for x in cands)  # distinct accepted concepts
    tot[5] = len(concepts)
    lines.append("| **all** | " + " | ".join(str(v) for v in tot) + " |")
    reasons = Counter(x["reason"] for x in cands if x["status"] == "rejected")
    merges = Counter(x["reason"] for x in cands if x["status"] == "merged")
    gen_rejects = Counter(r["reason"] for r in rejects if r["stage"] == "generate")
    lines += ["", "| outcome | reason | candidates |", "|---|---|---:|"]
    lines += [f"| rejected | {k} | {v} |" for k, v in reasons.most_common()]
    lines += [f"| merged | {k} | {v} |" for k, v in merges.most_common()]
    lines += [f"| answer rejected (generate) | {k} | {v} |" for k, v in gen_rejects.most_common()]
    accepted = sum(x["status"] == "accepted" for x in cands)
    llm = manifest["llm"]
    prompt_tokens, completion_tokens = llm.get("prompt_tokens", 0), llm.get("completion_tokens", 0)
    source = "manifest (uncached calls)"
    if not completion_tokens and cache_path and cache_path.exists():
        n, prompt_tokens, completion_tokens = cached_tokens(cache_path, llm["model"])
        source = f"LLM cache ({n} answers)"
    t = manifest["timings_s"]
    lat = llm.get("latency_s") or {}
    if lat:
        latency = ", ".join(f"{k} {v:.1f} s" for k, v in lat.items())
    elif llm.get("latency_ms_mean") is not None:  # manifests written before latency percentiles
        latency = f"mean {llm['latency_ms_mean']} ms, max {llm['latency_ms_max']} ms"
    else:
        latency = "n/a (no uncached call)"
    lines += [
        "",
        f"- LLM: {llm['calls']} calls, {llm['cache_hits']} cache hits, {llm['errors']} errors, "
        f"{llm['retries']} retries, {llm['unparseable']} unparseable; latency {latency}",
        f"- tokens ({source}): {prompt_tokens} prompt, {completion_tokens} completion; "
        f"per accepted concept: {completion_tokens / max(accepted, 1):.1f} completion, "
        f"{(prompt_tokens + completion_tokens) / max(accepted, 1):.1f} total",
        f"- wall time: {record.get('wall_s', t.get('total', 0)):.1f} s total (LLM start-up {t.get('llm_startup', 0):.1f} s, "
        f"pipeline {t.get('pipeline', 0):.1f} s of which generate {t.get('generate', 0):.1f} s, filter "
        f"{t.get('filter', 0):.1f} s, embed items {t.get('embed_items', 0):.1f} s)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=CACHE / "demo-llm")
    parser.add_argument("--out", type=Path, default=CACHE / "demo" / "run")
    parser.add_argument("--manifest", type=Path, default=None, help="report an existing run directory instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.manifest:
        run, record = args.manifest, {}
        cache = run.parent / ".cache" / "llm.sqlite"
    else:
        record = build_demo(args.cache_dir, args.out)
        run, cache = args.out, args.cache_dir / "llm.sqlite"
        (run.parent / "build_record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"Run {run} ({json.loads((run / 'manifest.json').read_text())['created']}); {platform.machine()} "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}\n")
    print(report(run, record, cache_path=cache))


if __name__ == "__main__":
    main()
