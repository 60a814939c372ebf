"""Unit scoring (annotation/scoring.py): the numpy and torch engines agree, and the column-wise shard and task
writers give what the row-wise ones gave."""

import json

import numpy as np
import pytest

from conceptkit.pipelines.annotation.labels import from_histograms
from conceptkit.pipelines.annotation.scoring import UnitScorer, engine_for
from conceptkit.pipelines.annotation.thresholds import score_histograms

pytest.importorskip("torch")


def _unit(n=600, m=48, d=32, seed=0):
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(m, d)).astype(np.float32)
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    items = rng.normal(size=(n, d)).astype(np.float32)
    items[np.arange(n)] += 2.0 * concepts[np.arange(n) % m]  # each item near one concept
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    classes = ["a", "b", "c"]
    labels = [classes[i % 3] if i % 7 else None for i in range(n)]
    concept_classes = [(classes[j % 3],) if j % 5 else (classes[j % 3], classes[(j + 1) % 3]) for j in range(m)]
    return items, concepts, labels, concept_classes


def _rule(items, concepts, concept_classes, *, class_margin=2.0, refits=None):
    rule = from_histograms(score_histograms(items @ concepts.T), z=1.0)
    rule = rule.with_classes(concept_classes, class_margin)
    return rule.with_refits(refits or {})


@pytest.mark.parametrize("score_dtype", ["float32", "float16"])
@pytest.mark.parametrize("class_margin", [2.0, None, float("inf")])
def test_torch_engine_gives_the_numpy_engines_annotation(score_dtype, class_margin):
    items, concepts, labels, concept_classes = _unit()
    rule = _rule(items, concepts, concept_classes, class_margin=class_margin, refits={3: -0.5, 7: 1.0})
    cpu = UnitScorer(concepts, top_k=5, score_dtype=score_dtype, engine="numpy").annotate(items, labels, rule)
    dev = UnitScorer(concepts, top_k=5, score_dtype=score_dtype, engine="torch").annotate(items, labels, rule)
    assert dev.scores.dtype == cpu.scores.dtype == np.dtype(score_dtype)
    assert np.allclose(dev.scores.astype(np.float32), cpu.scores.astype(np.float32), atol=1e-3)
    assert np.allclose(dev.top_scores, cpu.top_scores, atol=1e-5)
    assert (dev.top_ids[:, 0] == cpu.top_ids[:, 0]).mean() > 0.99  # the rest are exact ties in float16
    assert np.allclose(dev.uncertainty, cpu.uncertainty, atol=1e-3)
    decided = rule.decide(cpu.scores, labels)
    assert decided.sum() > 50  # the rule fires: the comparison below is not of two empty sets

    def pairs(s):
        return {(i, int(c)) for i in range(len(items)) for c in s.positive_ids[s.positive_indptr[i]:s.positive_indptr[i + 1]]}

    assert pairs(cpu) == {tuple(map(int, p)) for p in np.argwhere(decided)}
    differ = pairs(cpu) ^ pairs(dev)
    assert len(differ) <= 2  # only items sitting on the cut may flip between engines


def test_torch_engine_histograms_equal_numpy_histograms():
    items, concepts, _, _ = _unit()
    a = UnitScorer(concepts, top_k=1, engine="numpy").histograms(items)
    b = UnitScorer(concepts, top_k=1, engine="torch").histograms(items)
    assert a.shape == b.shape and a.sum() == b.sum() == items.shape[0] * concepts.shape[0]
    assert np.abs(a - b).sum() <= 4  # a score on a bin edge may land on either side of it


def test_only_a_cuda_device_picks_the_torch_engine():
    assert engine_for("cuda") == ("torch", "cuda") and engine_for("cuda:1") == ("torch", "cuda:1")
    assert engine_for("cpu") == ("numpy", "cpu") and engine_for(None) == ("numpy", "cpu")
    with pytest.raises(ValueError, match="engine must be one of"):
        UnitScorer(np.eye(3, dtype=np.float32), top_k=1, engine="jax")


def test_column_wise_tasks_are_the_row_wise_tasks():
    from conceptkit.pipelines.review.tasks import item_task, item_tasks_jsonl

    items, concepts, labels, concept_classes = _unit(n=120)
    rule = _rule(items, concepts, concept_classes)
    s = UnitScorer(concepts, top_k=5, engine="numpy").annotate(items, labels, rule)
    names = [f'concept "{j}" ü 100%% %s' for j in range(len(concepts))]
    ids, texts = [f"item-{i}" for i in range(len(items))], [f'text {i} with "quotes" é' for i in range(len(items))]
    fast = item_tasks_jsonl(item_ids=ids, texts=texts, labels=labels, top_ids=s.top_ids, top_scores=s.top_scores,
                            positive_indptr=s.positive_indptr, positive_ids=s.positive_ids,
                            uncertainty=s.uncertainty, concepts=names, run_id="run-1").splitlines()
    margins = rule.margins(s.scores, labels)
    assert len(fast) == len(items)
    for i, line in enumerate(fast):
        slow = item_task(item_id=ids[i], text=texts[i], label=labels[i], top_ids=s.top_ids[i].tolist(),
                         top_scores=s.top_scores[i].tolist(), concepts=names, run_id="run-1",
                         ticked=np.flatnonzero(margins[i] >= 0).tolist(),
                         uncertainty=float(np.exp(-np.abs(margins[i]).min())))
        assert json.loads(line) == slow.model_dump(mode="json")
    assert any(json.loads(line)["predictions"][0]["result"] for line in fast)  # some items have pre-ticks


def test_shard_table_fits_the_annotations_schema(tmp_path):
    import pyarrow as pa

    from conceptkit.pipelines.annotation.units import shard_table
    from conceptkit.schemas.annotations import annotations_schema, score_matrix
    from conceptkit.schemas.io import read_table, write_table

    items, concepts, labels, concept_classes = _unit(n=50)
    rule = _rule(items, concepts, concept_classes)
    for dtype in ("float32", "float16"):
        s = UnitScorer(concepts, top_k=5, score_dtype=dtype, engine="torch").annotate(items, labels, rule)
        unit = pa.table({"item_id": [f"i{i}" for i in range(50)], "label": labels,
                         "text": [f"t{i}" for i in range(50)], "split": ["train"] * 50})
        schema = annotations_schema(len(concepts), dtype)
        path = write_table(tmp_path / f"{dtype}.parquet", shard_table(unit, s), schema)
        back = read_table(path, schema)
        assert back.column("item_id").to_pylist() == [f"i{i}" for i in range(50)]
        assert back.column("top_concept_ids").to_pylist() == s.top_ids.tolist()
        i = 3
        assert back.column("concept_ids")[i].as_py() == s.positive_ids[s.positive_indptr[i]:s.positive_indptr[i + 1]].tolist()
        assert np.array_equal(score_matrix(back), s.scores.astype(np.float32))


def test_units_held_on_the_device_are_bounded_stamped_and_released(tmp_path, monkeypatch):
    """A held unit (units.keep_on_device on a GPU; a CPU tensor here) replaces the file's embeddings in
    load_unit_table and scores the same; it is refused past the budget, dropped when its file changes, and
    released after use or for the whole units folder."""
    import torch

    from conceptkit.pipelines.annotation import units

    held = units._DeviceUnits(budget=600 * 32 * 4 + 1)  # room for one unit of 600 x 32 float32
    monkeypatch.setattr(units, "_DEVICE_UNITS", held)
    items, concepts, labels, concept_classes = _unit()
    rule = _rule(items, concepts, concept_classes)
    d = str(tmp_path / "units")
    for group in (0, 1):
        units.save_unit(d, group, {"item_id": [f"i{k}" for k in range(600)], "label": labels, "text": ["t"] * 600,
                                   "split": ["train"] * 600, "embedding": items})
    assert held.keep(units._unit_path(d, 0), items, "cpu") and not held.keep(units._unit_path(d, 1), items, "cpu")
    table, emb = units.load_unit_table(d, 0, device="cpu")
    assert isinstance(emb, torch.Tensor) and table.column_names == ["item_id", "label", "text", "split"]
    assert table.column("item_id").to_pylist()[:2] == ["i0", "i1"]
    scorer = UnitScorer(concepts, top_k=5, engine="torch")
    a, b = scorer.annotate(emb, labels, rule), scorer.annotate(units.load_unit_table(d, 0)[1], labels, rule)
    assert np.array_equal(a.top_ids, b.top_ids) and np.array_equal(a.positive_ids, b.positive_ids)
    assert np.array_equal(scorer.histograms(emb), scorer.histograms(items))
    assert isinstance(units.load_unit_table(d, 1, device="cpu")[1], np.ndarray)  # not held: read from the file
    units.release_from_device(d, 0)
    assert len(held) == 0 and isinstance(units.load_unit_table(d, 0, device="cpu")[1], np.ndarray)
    assert held.keep(units._unit_path(d, 1), items, "cpu")  # the budget is free again
    import os

    path = units._unit_path(d, 1)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # the file was rewritten
    assert isinstance(units.load_unit_table(d, 1, device="cpu")[1], np.ndarray)
    held.keep(path, items, "cpu")
    units.release_from_device(str(tmp_path / "other"))
    assert len(held) == 1
    units.release_from_device(d)
    assert len(held) == 0
    assert not units.keep_on_device(d, 0, items, "cpu")  # only a CUDA device holds units in the pipeline


def test_review_tasks_from_worker_processes_equal_the_in_thread_ones(tmp_path):
    """The GPU path formats review tasks in spawned processes (Background(processes=True)) from task_fields:
    the files are byte for byte what write_tasks gives in the calling thread; a failure in a worker is raised."""
    import pyarrow as pa

    from conceptkit.pipelines.annotation.units import Background, task_fields, write_task_file, write_tasks

    items, concepts, labels, concept_classes = _unit(n=300)
    rule = _rule(items, concepts, concept_classes)
    scored = UnitScorer(concepts, top_k=5, engine="numpy").annotate(items, labels, rule)
    unit = pa.table({"item_id": [f"i{k}" for k in range(300)], "label": labels, "text": ['say "hi" 100%'] * 300,
                     "split": ["train"] * 300})
    names = [f"concept {j} é" for j in range(len(concepts))]
    write_tasks(tmp_path / "thread.jsonl", names, "run-1", unit, scored)
    jobs = Background(2, "tasks", processes=True)
    for k in range(3):
        jobs.submit(write_task_file, tmp_path / f"proc-{k}.jsonl", names, "run-1", task_fields(unit, scored))
    jobs.wait()
    for k in range(3):
        assert (tmp_path / f"proc-{k}.jsonl").read_bytes() == (tmp_path / "thread.jsonl").read_bytes()
    jobs.submit(write_task_file, tmp_path / "missing" / "\0bad.jsonl", names, "run-1", task_fields(unit, scored))
    with pytest.raises(ValueError):
        jobs.wait()
    jobs.close()
