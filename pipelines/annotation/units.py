"""A staged unit: the embedded items of one row group, written after embedding and read back one at a time by
the passes after selection (calibration histograms, annotation), so memory is bounded by the unit, not the
dataset. Also the unit's annotation shard, built column by column from its ``Scored`` (annotation/scoring.py).

No Beam here: the DoFns in pipelines/transforms.py call these, and so can a benchmark on a machine without
Beam (benchmarks/bench_annotate_pipeline_gpu.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np


def _unit_path(units_dir: str, group: int) -> Path:
    return Path(units_dir) / f"unit-{group:07d}.arrow"


def save_unit(units_dir: str, group: int, batch: dict) -> None:
    """Stage a unit's embedded items (ids, labels, texts, vectors) for the passes after selection.

    Later passes read units back one at a time instead of the runner holding every embedded batch until the
    concept set and thresholds exist: memory stays bounded by the unit, not the dataset. A retried bundle
    rewrites the same file (the name is the unit's), atomically. Arrow IPC, uncompressed: a staging file is
    read twice and deleted, so it is written and mapped back at memory speed (Parquet with its list levels
    and compression took 4.4 s per million vectors to read back on the GPU machine)."""
    import pyarrow as pa

    emb = np.ascontiguousarray(batch["embedding"], dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = pa.table({"item_id": pa.array(batch["item_id"], pa.string()), "label": pa.array(batch["label"], pa.string()),
                      "text": pa.array(batch["text"], pa.string()), "split": pa.array(batch["split"], pa.string()),
                      "embedding": vectors})
    path = _unit_path(units_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_unit_table(units_dir: str, group: int, *, device: str | None = None):
    """A staged unit as (Arrow table of item_id, label, text, split; (n, d) float32 embeddings).

    With a CUDA ``device`` whose copy of the unit's embeddings is still held (``keep_on_device``), the
    embeddings are that tensor and only the other columns are read from the file."""
    import pyarrow as pa

    path = _unit_path(units_dir, group)
    held = _DEVICE_UNITS.get(path) if device else None
    names = ["item_id", "label", "text", "split"]
    options = pa.ipc.IpcReadOptions(included_fields=[0, 1, 2, 3]) if held is not None else None
    with pa.OSFile(str(path)) as source:  # read into memory: the file may go any time
        table = pa.ipc.open_file(source, options=options).read_all()
    if held is not None:
        return table.select(names), held
    emb = table.column("embedding").combine_chunks()
    vectors = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, emb.type.list_size)
    return table.select(names), vectors


class _DeviceUnits:
    """Staged units' embeddings held in GPU memory between the passes of one process (the in-process runner),
    so the calibration and annotation passes neither read them back nor copy them to the GPU again. Bounded: a
    unit is held only while the total stays within a quarter of the GPU memory that was free at the first one;
    a unit that does not fit is read from its file as before. Each entry is tied to its file's size and
    modification time, so a rewritten unit (a retried bundle in another process) is read again. The annotation
    pass releases each unit after use, ``release(units_dir)`` the rest (build.py, when the pipeline ends)."""

    def __init__(self, budget: int | None = None) -> None:
        import threading

        self._lock = threading.Lock()
        self._held: dict[str, tuple[tuple[int, int], object]] = {}
        self._budget = budget  # bytes; None: a quarter of the device's free memory at the first unit

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def keep(self, path: Path, embeddings: np.ndarray, device: str) -> bool:
        import torch

        stamp = self._stamp(path)
        if stamp is None:
            return False
        with self._lock:
            if self._budget is None:
                self._budget = torch.cuda.mem_get_info(torch.device(device))[0] // 4
            used = sum(t.numel() * t.element_size() for k, (_, t) in self._held.items() if k != str(path))
            if used + embeddings.nbytes > self._budget:
                return False
        tensor = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
        with self._lock:
            self._held[str(path)] = (stamp, tensor)
        return True

    def get(self, path: Path, *, pop: bool = False):
        with self._lock:
            entry = self._held.pop(str(path), None) if pop else self._held.get(str(path))
        if entry is None or entry[0] != self._stamp(path):
            return None
        return entry[1]

    def release(self, units_dir: str) -> None:
        prefix = str(Path(units_dir)) + "/"
        with self._lock:
            for key in [k for k in self._held if k.startswith(prefix)]:
                del self._held[key]

    def __len__(self) -> int:
        return len(self._held)


_DEVICE_UNITS = _DeviceUnits()


def keep_on_device(units_dir: str, group: int, embeddings: np.ndarray, device: str | None) -> bool:
    """Hold a just-saved unit's embeddings on a CUDA ``device`` for the later passes (``load_unit_table``);
    False (nothing held) for any other device or when the budget is spent."""
    from conceptkit.pipelines.annotation.scoring import engine_for

    engine, torch_device = engine_for(device)
    if engine != "torch":
        return False
    return _DEVICE_UNITS.keep(_unit_path(units_dir, group), embeddings, torch_device)


def release_from_device(units_dir: str, group: int | None = None) -> None:
    """Let go of one unit's device copy (after its annotation), or of every unit under ``units_dir``."""
    if group is None:
        _DEVICE_UNITS.release(units_dir)
    else:
        _DEVICE_UNITS.get(_unit_path(units_dir, group), pop=True)


def save_and_keep(units_dir: str, group: int, batch: dict, device: str | None) -> None:
    """``save_unit``, then ``keep_on_device`` (the file's stamp ties the device copy to it)."""
    save_unit(units_dir, group, batch)
    keep_on_device(units_dir, group, batch["embedding"], device)


def unit_scorer(selection: dict, device: str | None, *, top_k: int, score_dtype: str, index_cfg=None):
    """The scorer of a concept set: torch on a CUDA ``device``, else numpy with the run's index kind for top-k."""
    from conceptkit.pipelines.annotation.scoring import UnitScorer, engine_for

    engine, torch_device = engine_for(device)
    index = None
    if engine == "numpy":
        from conceptkit.annotators.index import ConceptIndex

        concepts = selection["concepts"]
        index = ConceptIndex.build(selection["matrix"], np.arange(len(concepts)), model="", concepts=[],
                                   **(index_cfg.model_dump() if index_cfg else {}))
    return UnitScorer(selection["matrix"], top_k=top_k, score_dtype=score_dtype, engine=engine,
                      device=torch_device, index=index)


def shard_table(unit, scored, score_layout: str = "list"):
    """A unit's items (an Arrow table of item_id, label, text, split) and their ``Scored`` -> annotation rows as
    an Arrow table, column by column, the scores in ``score_layout``."""
    import pyarrow as pa

    from conceptkit.schemas.annotations import score_column

    n, k = scored.top_ids.shape
    fixed = np.arange(0, (n + 1) * k, k, dtype=np.int32)
    return pa.table({
        "item_id": unit.column("item_id"),
        "text": unit.column("text"),
        "label": unit.column("label"),
        "split": unit.column("split"),
        "top_concept_ids": pa.ListArray.from_arrays(fixed, pa.array(scored.top_ids.reshape(-1), pa.int32())),
        "top_scores": pa.ListArray.from_arrays(fixed, pa.array(scored.top_scores.reshape(-1), pa.float32())),
        "concept_ids": pa.ListArray.from_arrays(scored.positive_indptr.astype(np.int32),
                                                pa.array(scored.positive_ids, pa.int32())),
        "scores": score_column(scored.scores, score_layout),
    })


class Background:
    """Calls run on ``threads`` threads, at most ``threads`` in flight (``submit`` waits for the oldest first), so
    what they hold stays bounded; ``wait`` returns when all are done and raises the first failure. Work that
    releases the GIL (Parquet encoding, zstd, file writes) runs beside the caller's GPU waits; ``threads=0`` runs
    each call in the caller's thread. ``processes=True`` runs the calls in that many spawned worker processes
    instead, for pure-Python work that would hold the GIL the caller needs (review tasks on the GPU path: 8 s of
    the GIL per million items); the function and its arguments must pickle."""

    def __init__(self, threads: int, name: str, *, processes: bool = False) -> None:
        self.threads = threads
        self.name = name
        self.processes = processes
        self._pool = None
        self._pending: list = []

    def submit(self, fn, *args, **kwargs) -> None:
        if self.threads <= 0:
            fn(*args, **kwargs)
            return
        if self._pool is None:
            if self.processes:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(self.threads, mp_context=multiprocessing.get_context("spawn"))
            else:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        while len(self._pending) >= self.threads:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        errors = []
        for future in pending:
            try:
                future.result()
            except Exception as exc:  # every call is waited for before the first failure is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


class ShardWriter:
    """Annotation shards written on a few threads (``Background``), so the shards of one unit are written while
    the next unit is scored. ``write`` returns the shard names at once (one per split,
    ``<split>-<id>.parquet``); ``wait`` returns when every write is done and raises the first failure.
    ``threads=1`` writes in the calling thread. Each file is written atomically (``write_table``)."""

    def __init__(self, directory: str, score_dtype: str = "float32", threads: int | None = None,
                 score_layout: str = "list") -> None:
        import os

        self.directory = Path(directory)
        self.score_dtype = score_dtype
        self.score_layout = score_layout
        # All cores but two, 2 to 16: Parquet encoding of the score lists is CPU-bound (1M x 5,000 float16 scores
        # on the 16-core GPU machine: 11.1 s of waiting for 8 writer threads, 5.2 s for 14); each write in flight
        # holds one unit's table (annotation.rows_per_shard x concepts scores).
        threads = threads or max(2, min(16, (os.cpu_count() or 2) - 2))
        self._jobs = Background(threads if threads > 1 else 0, "conceptkit-shards")

    def write(self, rows, n_concepts: int) -> list[tuple[str, int]]:
        """(shard name, rows) per split of ``rows`` (a unit's annotation table, ``shard_table``)."""
        import pyarrow.compute as pc

        from conceptkit.schemas.annotations import annotations_schema, shard_name
        from conceptkit.schemas.io import write_table

        splits = pc.unique(rows.column("split")).to_pylist()
        if len(splits) == 1:  # the usual unit: no filtered copy of its score vectors
            parts = {splits[0]: rows}
        else:
            parts = {name: rows.filter(pc.equal(rows.column("split"), name)) for name in splits}
        schema = annotations_schema(n_concepts, self.score_dtype, self.score_layout)
        out = []
        for split_name, part in sorted(parts.items()):
            name = shard_name(split_name)
            self._jobs.submit(write_table, self.directory / name, part, schema, row_group_size=8192)
            out.append((name, len(part)))
        return out

    def wait(self) -> None:
        self._jobs.wait()

    def close(self) -> None:
        self._jobs.close()


def task_workers(cuda: bool) -> int:
    """Workers that format review tasks beside the scoring loop: one thread on the CPU path; on the GPU path
    worker processes, a quarter of the cores (2 to 8), since with packed scores the task formatting is what the
    GPU path waits for (benchmarks/README.md, "Score layout")."""
    import os

    return max(2, min(8, (os.cpu_count() or 2) // 4)) if cuda else 1


def task_fields(unit, scored) -> dict:
    """What a unit's review tasks need: the unit's item columns (Arrow) and the scored top-k, positives and
    uncertainty, not the score vectors; cheap to send to another process (``Background(processes=True)``)."""
    return {"unit": unit.select(["item_id", "text", "label"]), "top_ids": scored.top_ids,
            "top_scores": scored.top_scores, "positive_indptr": scored.positive_indptr,
            "positive_ids": scored.positive_ids, "uncertainty": scored.uncertainty}


def write_task_file(path, concepts, run_id: str, fields: dict) -> None:
    """A unit's review tasks (``item_tasks_jsonl`` of ``task_fields``) into ``path``, atomically."""
    from conceptkit.pipelines.review.tasks import item_tasks_jsonl
    from conceptkit.schemas.io import write_text_atomic

    fields = dict(fields)
    unit = fields.pop("unit")
    write_text_atomic(path, item_tasks_jsonl(
        item_ids=unit.column("item_id").to_pylist(), texts=unit.column("text").to_pylist(),
        labels=unit.column("label").to_pylist(), **fields, concepts=concepts, run_id=run_id))


def write_tasks(path, concepts, run_id: str, unit, scored) -> None:
    """A unit's review tasks into ``path``, atomically (``write_task_file`` in this process)."""
    write_task_file(path, concepts, run_id, task_fields(unit, scored))
