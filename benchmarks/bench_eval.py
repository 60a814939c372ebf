"""Concept quality through `conceptkit eval`: the default build (plus --domain) against the black box, random
concepts, zero-shot class names and, on DBpedia, CB-LLM's published ChatGPT concept set.

Stages (each an exact CLI command, printed before it runs):
  prepare  ../shared/data -> benchmarks/.cache/eval/<dataset>/{train,test}.csv (class names humanised)
  build    conceptkit build --items train.csv --holdout 0 --domain ... (the embedded LLM, default settings)
  eval     conceptkit eval RUN --test test.csv --seeds 10 [--compare cbllm/dbpedia_concepts.json]
Prints a Markdown table (paste it into benchmarks/README.md) from RUN/eval/eval.json. Skips cleanly when
../shared/data is absent. LLM answers and embeddings are cached under benchmarks/.cache, so a rerun is cheap.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache" / "eval"
DATASETS = {
    "dbpedia": {"domain": "Wikipedia article abstracts", "compare": DATA / "cbllm" / "dbpedia_concepts.json"},
    "trec": {"domain": "questions people ask, classified by the type of answer they expect", "compare": None},
}
TREC_NAMES = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human", "LOC": "location",
              "NUM": "numeric value"}


def humanize(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def prepare(name: str) -> Path:
    out = CACHE / name
    out.mkdir(parents=True, exist_ok=True)
    if name == "dbpedia":
        meta = {}
        for line in (DATA / "dbpedia14_sample" / "meta.txt").read_text().splitlines():
            if ":" in line and line.split(":")[0].strip().isdigit():
                key, value = line.split(":", 1)
                meta[key.strip()] = humanize(value.strip())
        for split, source in (("train", "val.csv"), ("test", "test.csv")):
            with open(DATA / "dbpedia14_sample" / source, newline="", encoding="utf-8") as f:
                rows = [{"id": f"{split}-{i}", "text": text, "label": meta[label]}
                        for i, (label, text) in enumerate(csv.reader(f))]
            _write(out / f"{split}.csv", rows)
    else:
        for split, source in (("train", "TREC.train"), ("test", "TREC.test")):
            lines = (DATA / "trec" / source).read_bytes().decode("latin-1").splitlines()
            rows = [{"id": f"{split}-{i}", "text": line.split(" ", 1)[1], "label": TREC_NAMES[line.split(":")[0]]}
                    for i, line in enumerate(lines) if line.strip()]
            _write(out / f"{split}.csv", rows)
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)


def _rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def sh(argv: list[str]) -> float:
    print("$ " + " ".join(argv), flush=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT)
    return time.perf_counter() - started


def table(record: dict) -> str:
    rows: dict[str, dict] = {}
    for r in record["results"]:
        value = "-" if r["accuracy_mean"] is None else f"{r['accuracy_mean']:.3f}" + (
            f" ± {r['accuracy_sd']:.3f}" if r["seeds"] > 1 else "")
        rows.setdefault(r["model"], {"n": r["n_features"]})[r["shots"]] = value
    shots = [1, 2, 4, 8, 16, "all"]
    lines = ["| features | n | " + " | ".join(f"{k}-shot" if k != "all" else "all" for k in shots) + " |",
             "|---|---:|" + "---:|" * len(shots)]
    for model, cells in rows.items():
        if model == "zero_shot":
            lines.append(f"| zero-shot class names | {cells['n']} | " + " | ".join([""] * 5) + f" | {cells[0]} |")
            continue
        lines.append(f"| {model} | {cells['n']} | " + " | ".join(cells.get(k, "") for k in shots) + " |")
    return "\n".join(lines)


def speed(seeds: int) -> None:
    """Eval at ~10k test items: a run on 50 items per class of DBpedia's pool, tested on the rest plus test.csv
    (9,300 items, none leaking), with CB-LLM's 476 concepts as well; timed on a second, embedding-cached run."""
    data = prepare("dbpedia")
    rows = list(csv.DictReader(open(data / "train.csv", newline="", encoding="utf-8")))
    test = list(csv.DictReader(open(data / "test.csv", newline="", encoding="utf-8")))
    seen: dict[str, int] = {}
    small, rest = [], []
    for r in rows:
        (small if seen.get(r["label"], 0) < 50 else rest).append(r)
        seen[r["label"]] = seen.get(r["label"], 0) + 1
    _write(data / "small-train.csv", small)
    _write(data / "big-test.csv", rest + test)
    run = CACHE / "runs" / "dbpedia-small"
    conceptkit = str(Path(sys.executable).parent / "conceptkit")
    sh([conceptkit, "build", "--items", str(data / "small-train.csv"), "--holdout", "0", "--domain",
        DATASETS["dbpedia"]["domain"], "--out", str(run), "--cache-dir", str(CACHE / "cache")])
    argv = [conceptkit, "-q", "eval", str(run), "--test", str(data / "big-test.csv"), "--seeds", str(seeds),
            "--compare", str(DATASETS["dbpedia"]["compare"])]
    sh(argv)  # embeds the test items once
    seconds = sh(argv)
    record = json.loads((run / "eval" / "eval.json").read_text())
    print(f"\neval of {record['n_test']} test items x ({record['n_concepts']} + 476) concepts, {seeds} seeds: "
          f"{seconds:.1f} s wall (embeddings cached)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("dataset", choices=[*sorted(DATASETS), "speed"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tag", default="", help="suffix of the run directory (to keep several variants)")
    args, build_args = parser.parse_known_args(argv)  # the rest goes to `conceptkit build` (e.g. --mine-per-class 0)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return 0
    if args.dataset == "speed":
        speed(args.seeds)
        return 0
    spec = DATASETS[args.dataset]
    data = prepare(args.dataset)
    run = CACHE / "runs" / (args.dataset + (f"-{args.tag}" if args.tag else ""))
    conceptkit = str(Path(sys.executable).parent / "conceptkit")
    build_s = sh([conceptkit, "build", "--items", str(data / "train.csv"), "--holdout", "0", "--domain",
                  spec["domain"], "--out", str(run), "--cache-dir", str(CACHE / "cache"), *build_args])
    eval_argv = [conceptkit, "eval", str(run), "--test", str(data / "test.csv"), "--seeds", str(args.seeds)]
    if spec["compare"] and Path(spec["compare"]).exists():
        eval_argv += ["--compare", str(spec["compare"])]
    eval_s = sh(eval_argv)
    record = json.loads((run / "eval" / "eval.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    llm = manifest["llm"]
    mined = manifest["counts"].get("candidates_mined", 0)
    sources = {}
    cands = {c["candidate_id"]: c for c in _rows(run / "candidates.parquet")}
    for c in _rows(run / "concepts.parquet"):
        src = cands.get(c["candidate_id"], {}).get("source", "llm")
        sources[src] = sources.get(src, 0) + 1
    words = [len(c["concept"].split()) for c in _rows(run / "concepts.parquet")]
    print(f"\nselected by source: {sources}; {mined} mined candidates; {sum(words) / len(words):.2f} words per "
          f"selected concept; {(llm['prompt_tokens'] + llm['completion_tokens']) / len(words):.0f} LLM tokens per "
          f"selected concept")
    print(f"\nmachine: {platform.machine()} {platform.processor() or ''}, {platform.python_version()}; "
          f"{datetime.now(timezone.utc).date()}; build {build_s:.0f} s ({llm['calls']} LLM calls, "
          f"{llm['prompt_tokens']}+{llm['completion_tokens']} tokens), eval {eval_s:.0f} s "
          f"({record['n_train']} train / {record['n_test']} test items, {record['n_concepts']} concepts)\n")
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
