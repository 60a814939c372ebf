"""``eval/report.html``: one self-contained page a person would rather look at than read eval.json.

In: the evaluation's rows and summary, the run (concepts, thresholds, gains) and the train split's scores. Out:
one HTML file, figures drawn with matplotlib (Agg) and inlined as PNG data URIs: few-shot curves of the bottleneck
against every baseline, a concept x class heatmap of mean scores, per-concept score histograms with thresholds,
the confusion matrix, selection gain curves per class; tables of top concepts per class (sparse weights) and of
example test items with the concepts behind their prediction. No script, no CDN, no network.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

MAX_HEATMAP_CONCEPTS = 60
MAX_HISTOGRAMS = 24


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _curves(results: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    shot_values = sorted({r["shots"] for r in results if isinstance(r["shots"], int) and r["shots"] > 0})
    positions = {k: i for i, k in enumerate(shot_values)}
    positions["all"] = len(shot_values)
    for model, rows in by_model.items():
        rows = [r for r in rows if r["shots"] in positions and r["accuracy_mean"] is not None]
        if not rows:
            continue
        xs = [positions[r["shots"]] for r in rows]
        ys = [r["accuracy_mean"] for r in rows]
        sds = [r["accuracy_sd"] or 0 for r in rows]
        style = dict(linewidth=2.6) if model == "bottleneck" else dict(linewidth=1.4)
        ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, label=model, **style)
    zero = next((r for r in results if r["model"] == "zero_shot"), None)
    if zero is not None:
        ax.axhline(zero["accuracy_mean"], color="grey", linestyle=":", label="zero_shot (class names)")
    ax.set_xticks(range(len(shot_values) + 1), [*map(str, shot_values), "all"])
    ax.set_xlabel("labelled items per class")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Few-shot accuracy: the run's concepts against the baselines")
    return _png(fig)


def _heatmap(names: list[str], classes: list[str], train_scores: np.ndarray, y_train: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    means = np.stack([train_scores[y_train == c].mean(axis=0) if np.any(y_train == c)
                      else np.zeros(len(names)) for c in range(len(classes))], axis=1)
    keep = np.argsort(-(means.max(axis=1) - means.mean(axis=1)))[:MAX_HEATMAP_CONCEPTS]
    keep = keep[np.lexsort((-means[keep].max(axis=1), means[keep].argmax(axis=1)))]
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(classes), 1.2 + 0.22 * len(keep)))
    image = ax.imshow(means[keep], aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(keep)), [names[j][:40] for j in keep], fontsize=7)
    ax.set_xticks(range(len(classes)), [c[:18] for c in classes], rotation=60, ha="right", fontsize=8)
    fig.colorbar(image, ax=ax, label="mean cosine score (train items)")
    ax.set_title("Concept x class: mean score")
    return _png(fig)


def _histograms(names: list[str], thresholds: list[float], train_scores: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    shown = min(len(names), MAX_HISTOGRAMS)
    cols = 4
    rows = (shown + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.1 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= shown:
            ax.axis("off")
            continue
        ax.hist(train_scores[:, k], bins=30, color="#4c72b0")
        ax.axvline(thresholds[k], color="#dd4444", linestyle="--", linewidth=1.2)
        ax.set_title(names[k][:32], fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("Score distributions per concept (train items); dashed: the concept's threshold", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _confusion(matrix: list[list[int]], classes: list[str]) -> str:
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    normalised = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(classes), 1.2 + 0.45 * len(classes)))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), [c[:18] for c in classes], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), [c[:18] for c in classes], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (bottleneck, all train data)")
    return _png(fig)


def _gains(concepts) -> str:
    import matplotlib.pyplot as plt

    rows = concepts.select(["picked_for", "rank", "gain"]).to_pylist()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    by_class: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        by_class.setdefault(r["picked_for"], []).append((r["rank"], r["gain"]))
    for cls, points in sorted(by_class.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=cls[:20])
    ax.set_xlabel("pick (rank within the class)")
    ax.set_ylabel("marginal gain")
    ax.set_title("Selection gain per pick, per class")
    ax.grid(alpha=0.3)
    if len(by_class) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, *, run, results: list[dict[str, Any]], summary: dict[str, Any],
                 train_scores: np.ndarray, y_train: np.ndarray, concepts) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from conceptkit.schemas.io import write_text_atomic

    names = concepts.column("concept").to_pylist()
    thresholds = concepts.column("threshold").to_pylist()
    classes = summary["classes"]
    shots = [*summary["shots"], "all"]
    by_model: dict[str, dict[Any, str]] = {}
    for r in results:
        value = "-" if r["accuracy_mean"] is None else f"{r['accuracy_mean']:.3f}" + (
            f" ± {r['accuracy_sd']:.3f}" if r["seeds"] > 1 else "")
        by_model.setdefault(r["model"], {})[r["shots"]] = value
    accuracy_rows = [[m, *[cells.get(k, "") for k in shots], cells.get(0, "")] for m, cells in by_model.items()]
    explanations = summary["explanations"]
    top_rows = [[cls, ", ".join(f"{c['concept']} ({c['weight']:+.2f})" for c in items) or "(none at this NEC)"]
                for cls, items in explanations["top_concepts_per_class"].items()]
    item_rows = [[i["item_id"], i["text"][:160], i["predicted"],
                  ", ".join(f"{c['concept']} ({c['contribution']:+.2f})" for c in i["top_concepts"])]
                 for i in explanations["test_items"]]
    figures = [
        ("Few-shot curves", _curves(results)),
        ("Concept x class heatmap", _heatmap(names, classes, train_scores, y_train)),
        ("Score histograms and thresholds", _histograms(names, thresholds, train_scores)),
        ("Confusion matrix", _confusion(summary["confusion_matrix"], classes)),
        ("Selection gains", _gains(concepts)),
    ]
    sparse = summary["sparse"]
    gen = summary.get("generation") or {}
    round_rows = [[r["round"], r["requests"], ", ".join(r["targets"]) or ", ".join(r["prompts"]), r["accepted"],
                   r["selected"], "-" if r["validation_accuracy"] is None else f"{r['validation_accuracy']:.3f}",
                   "yes" if r["kept"] else "no"] for r in gen.get("rounds", [])]
    provenance = (
        "<h2>How the concepts were made</h2>"
        + "<p>Selected concepts by source: " + html.escape(", ".join(f"{k} {v}" for k, v in
                                                                   gen.get("selected_by_source", {}).items()) or "-")
        + f"; {gen.get('llm_tokens', 0)} LLM tokens. Removed by the filters: "
        + html.escape(", ".join(f"{k.replace(':', ' ')} {v}" for k, v in gen.get("filtered", {}).items()) or "none")
        + ".</p>"
        + (_table(["round", "requests", "asked (targets or prompts)", "accepted", "selected", "validation accuracy",
                   "kept"], round_rows) if round_rows else "<p>One generation round.</p>")
    ) if gen else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"]) or "<li>none</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>conceptkit eval: {html.escape(str(summary['run']))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }} figure {{ margin: 1em 0 2em; }} img {{ max-width: 100%; }}
.small {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>Is this concept set any good?</h1>
<p>Run <code>{html.escape(str(summary['run_id']))}</code> ({html.escape(str(summary['run']))}): {summary['n_concepts']}
concepts, {len(classes)} classes; {summary['n_train']} train items, {summary['n_test']} test items from
{html.escape(str(summary['test']))}; {summary['seeds']} seeds per few-shot row. Every row uses the same items,
splits and classifier (standardised features, logistic regression C=1).</p>
<h2>Accuracy</h2>
{_table(["model", *[f"{k}-shot" if k != "all" else "all data" for k in shots], "zero-shot"], accuracy_rows)}
<p>Sparse bottleneck: {sparse['nec']:.1f} effective concepts per class (target {sparse['nec_target']}),
accuracy {sparse['accuracy']:.3f}.</p>
<h2>Figures</h2>
{"".join(f'<figure><figcaption><b>{html.escape(t)}</b></figcaption><img alt="{html.escape(t)}" src="{src}"></figure>'
         for t, src in figures)}
{provenance}
<h2>Top concepts per class (sparse model weights)</h2>
{_table(["class", "concepts (weight)"], top_rows)}
<h2>Example test items and the concepts behind their prediction</h2>
{_table(["item", "text", "predicted", "concepts (contribution)"], item_rows)}
<h2>Notes</h2><ul>{notes}</ul>
<p class="small">Written by conceptkit eval in {summary['seconds']:.1f} s; the numbers are in eval.json, the sparse
model in weights.parquet.</p>
</body></html>
"""
    return write_text_atomic(path, page)
