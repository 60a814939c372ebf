"""Active learning that pays: review picked by uncertainty against random picks of the same budget, on TREC's
fine question types, through the real loop (conceptkit build, Label Studio, ls push / pull).

Setup: 2,000 TREC questions (the 500 test ones and 1,500 hashed train ones), labelled with the 6 coarse classes;
the concepts are the descriptions of the fine types in bench_labels.py, served as the LLM's answers by the
loopback fake OpenAI-compatible server (tests/fake_llm.py), so the build is the product's own. A simulated
annotator answers every pushed item task from the ground truth (the concept of the item's fine type is
present, every other one absent), posting through Label Studio's API as the labeling UI does.

Each strategy starts from its own copy of the run and a Label Studio project of its own; a round is
`ls push --budget 20 --pick uncertain|random` -> answers -> `ls pull`. After every pull the run's final labels
(merged.parquet: human labels, then thresholds re-fitted from them, then the label rule) are scored against the
fine labels of all 2,000 questions (macro F1 over concepts). Target: uncertain picks reach the F1 of 200
random reviewed items with at most 100 reviewed items.

    python benchmarks/bench_active_learning.py [--rounds 10] [--budget 20]

Needs label-studio installed (the test fixture's migrated template is reused); skips when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec"
WORK = ROOT / "benchmarks" / ".cache" / "active_learning"
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]


def items() -> tuple[list[dict], dict[str, str]]:
    rows, fine = [], {}
    for name, part in (("TREC.test", "test"), ("TREC.train", "train")):
        for i, line in enumerate((DATA / name).read_bytes().decode("latin-1").splitlines()):
            if not line.strip():
                continue
            label, text = line.split(" ", 1)
            item_id = f"{part}-{i}"
            if part == "train" and int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 1000 >= 275:
                continue  # about 1,500 of 5,452
            rows.append({"id": item_id, "text": text.strip(), "label": label.split(":")[0]})
            fine[item_id] = label
    return rows, fine


def final_labels(run: Path, item_ids: list[str], n_concepts: int) -> np.ndarray:
    import pyarrow.parquet as pq

    pos = {i: k for k, i in enumerate(item_ids)}
    out = np.zeros((len(item_ids), n_concepts), dtype=bool)
    merged = run / "merged.parquet"
    if merged.exists():
        for r in pq.read_table(merged, columns=["item_id", "concept_id", "final"]).to_pylist():
            out[pos[r["item_id"]], r["concept_id"]] = r["final"]
    return out


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = (pred & truth).sum(0)
    return float(np.mean(2 * tp / np.maximum(pred.sum(0) + truth.sum(0), 1)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=20)
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import httpx
    import pyarrow.parquet as pq

    from bench_labels import CONCEPTS
    from fake_llm import FakeLLM
    from labelstudio_fixtures import PASSWORD, TOKEN, TOKEN_ENV, USERNAME, _label_studio_version, _template
    from conceptkit.annotators.labelstudio import LocalLabelStudio, free_port
    from conceptkit.pipelines.cli.labelstudio import load_run, ls_pull, ls_push
    from conceptkit.pipelines.cli.main import main as cli
    from conceptkit.pipelines.review.tasks import concept_groups, group_control
    from conceptkit.pipelines.selection.filters import normalize_concept

    rows, fine = items()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with open(WORK / "items.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    answers: dict[str, list[str]] = {}
    for code, text in CONCEPTS.items():
        answers.setdefault(code.split(":")[0], []).append(text)
    base = WORK / "run"
    started = time.perf_counter()
    with FakeLLM(answers) as fake:
        rc = cli(["-q", "build", "--items", str(WORK / "items.csv"), "--out", str(base), "--llm-base-url",
                  fake.base_url, "--llm-model", "fake-model", "--k-per-class", "25", "--mine-per-class", "0",
                  "--holdout", "0", "--cache-dir", str(WORK / "cache")])
    if rc:
        return rc
    print(f"built {base} in {time.perf_counter() - started:.0f} s", flush=True)
    by_text = {normalize_concept(t): code for code, t in CONCEPTS.items()}
    run = load_run(base)
    concept_fine = [by_text.get(c) for c in run.concept_names]
    truth = np.array([[fine[i] == f for f in concept_fine] for i in run.item_ids])
    groups = concept_groups(run.concepts)
    print(f"{len(run.concept_names)} concepts ({sum(f is not None for f in concept_fine)} describe a fine type), "
          f"{len(run.item_ids)} items", flush=True)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-al-ls-")) / "data"
    shutil.copytree(_template(_label_studio_version()), data_dir)
    server = LocalLabelStudio(data_dir, username=USERNAME, password=PASSWORD, token=TOKEN, port=free_port())
    os.environ[TOKEN_ENV] = TOKEN
    server.start(timeout_s=180)
    curves: dict[str, list[tuple[int, float]]] = {}
    try:
        for pick in ("uncertain", "random"):
            copy = WORK / f"run-{pick}"
            shutil.copytree(base, copy)
            manifest = json.loads((copy / "manifest.json").read_text())
            manifest["lineage"] = f"{manifest['lineage']}-{pick}"  # a project of its own
            (copy / "manifest.json").write_text(json.dumps(manifest))
            curve = [(0, macro_f1(load_run(copy).rule.decide(run.scores, run.labels), truth))]
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60) as http:
                for r in range(args.rounds):
                    pushed = ls_push(copy, url=server.url, budget=args.budget, pick=pick, seed=r, max_retries=2)
                    tasks = http.get("/api/tasks/", params={"project": pushed["project_id"], "page_size": 1000,
                                                            "fields": "all"}).json()
                    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
                    for task in tasks:
                        if task.get("total_annotations"):
                            continue
                        item = task["data"]["item_id"]
                        ticks = {c for c, f in zip(run.concept_names, concept_fine) if f == fine[item]}
                        # as the labeling UI sends it: each tick in the checklist of its class group
                        result = [{"from_name": group_control(k), "to_name": "text", "type": "choices",
                                   "value": {"choices": [c for c in names if c in ticks]}}
                                  for k, (_, names) in enumerate(groups) if ticks & set(names)]
                        http.post(f"/api/tasks/{task['id']}/annotations/",
                                  json={"result": result, "lead_time": 1.0}).raise_for_status()
                    ls_pull(copy, url=server.url, max_retries=2)
                    reviewed = (r + 1) * args.budget
                    f1 = macro_f1(final_labels(copy, run.item_ids, len(run.concept_names)), truth)
                    curve.append((reviewed, f1))
                    print(f"{pick}: {reviewed} reviewed items -> macro F1 {f1:.3f}", flush=True)
            curves[pick] = curve
    finally:
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"\nMachine: {platform.node()} ({os.cpu_count()} cores), {stamp}; "
          f"`python benchmarks/bench_active_learning.py --rounds {args.rounds} --budget {args.budget}`")
    print("\n| reviewed items | uncertain (conceptkit default) | random |")
    print("|---|---|---|")
    for (n, u), (_, r) in zip(curves["uncertain"], curves["random"]):
        print(f"| {n} | {u:.3f} | {r:.3f} |")
    picture = ROOT / "benchmarks" / "active_learning.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for pick, style in (("uncertain", "-o"), ("random", "--s")):
        ax.plot(*zip(*curves[pick]), style, label=f"{pick} picks", markersize=4)
    ax.set_xlabel("reviewed items (ls push --budget 20, then ls pull)")
    ax.set_ylabel("macro F1 of the final labels")
    ax.set_title("TREC fine types, 2,000 questions: review picked by uncertainty vs random", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(picture)
    print(f"picture: {picture.relative_to(ROOT)}")
    target = curves["random"][-1][1]
    reach = next((n for n, f in curves["uncertain"] if f >= target), None)
    print(f"\nrandom at {curves['random'][-1][0]} items: {target:.3f}; uncertain reaches it at "
          f"{reach if reach is not None else 'more than ' + str(curves['uncertain'][-1][0])} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
