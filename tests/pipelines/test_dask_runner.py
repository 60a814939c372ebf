"""The same build on Beam's DaskRunner (a dask.distributed LocalCluster, 2 worker processes on 127.0.0.1)
gives the in-process runner's outputs row for row."""

import pytest

from conftest import DEMO_ANSWERS, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.schemas.annotations import annotations_schema
from conceptkit.schemas.candidates import CANDIDATES
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import read_table
from conceptkit.schemas.rejects import REJECTS

pytest.importorskip("dask.distributed")


def tables(out):
    concepts = read_table(out / "concepts.parquet", CONCEPTS)
    ann = read_table(out / "annotations", annotations_schema(concepts.num_rows)).sort_by("item_id")
    return {
        "concepts": concepts.to_pylist(),
        "candidates": read_table(out / "candidates.parquet", CANDIDATES).to_pylist(),
        "rejects": read_table(out / "rejects.parquet", REJECTS).to_pylist(),
        "annotations": ann.to_pylist(),
    }


@pytest.mark.slow
def test_dask_matches_direct(tmp_path):
    rows = demo_rows(per_class=6, classes=["cooking", "music", "travel"])
    rows.append({"id": "empty", "text": "", "label": "music"})
    items = write_csv(tmp_path / "items.csv", rows)
    with FakeLLM(DEMO_ANSWERS) as fake:
        # Several work units (3 items each) so both Dask workers get some.
        direct = load_config(None, fake_overrides(fake, tmp_path / "d", items, annotation={"rows_per_shard": 3}))
        run_build(direct)
        dask = load_config(None, fake_overrides(fake, tmp_path / "k", items, annotation={"rows_per_shard": 3},
                                                runner={"runner": "dask", "dask_workers": 2}))
        summary = run_build(dask)
    a, b = tables(direct.out_dir()), tables(dask.out_dir())
    assert summary.counts["items_annotated"] == len(rows) - 1
    for name in a:
        assert len(a[name]) == len(b[name]), name
        if name == "annotations":
            for x, y in zip(a[name], b[name]):
                assert x["item_id"] == y["item_id"] and x["top_concept_ids"] == y["top_concept_ids"]
                assert max(abs(p - q) for p, q in zip(x["scores"], y["scores"])) < 1e-5
        elif name == "concepts":
            # Class sums are added in a different order across workers: floats agree to rounding.
            exact = ("concept_id", "concept", "classes", "picked_for", "rank", "candidate_id")
            for x, y in zip(a[name], b[name]):
                assert {k: x[k] for k in exact} == {k: y[k] for k in exact}
                assert x["gain"] == pytest.approx(y["gain"], rel=1e-5, abs=1e-6)
        else:
            assert a[name] == b[name], name
    # 19 rows in units of 3: 7 units, the last holding only the rejected empty item; each unit writes one shard per
    # split it holds (<split>-*.parquet), the same shards on both runners.
    import pyarrow.parquet as pq

    shards = {run: sorted((cfg.out_dir() / "annotations").glob("*.parquet")) for run, cfg in (("d", direct), ("k", dask))}
    assert 6 <= len(shards["k"]) == len(shards["d"]) <= 12
    for shard in shards["k"]:
        assert set(pq.read_table(shard, columns=["split"]).column("split").to_pylist()) == {shard.name.split("-")[0]}


@pytest.mark.slow
def test_worker_killed_mid_run_completes_or_fails_loudly(tmp_path):
    """Kill a Dask worker process while the build runs: the build either completes with every item accounted
    for, or raises and leaves no run directory; a rerun then succeeds and reuses the embedding cache."""
    import threading
    import time

    from dask.distributed import LocalCluster

    from conceptkit.pipelines.build import RunError

    rows = demo_rows(per_class=6, classes=["cooking", "music", "travel"])
    items = write_csv(tmp_path / "items.csv", rows)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, FakeLLM(DEMO_ANSWERS, latency_s=0.3) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, annotation={"rows_per_shard": 3},
                                               llm={"concurrency": 1},
                                               runner={"runner": "dask", "dask_scheduler": cluster.scheduler_address}))
        outcome = {}

        def build():
            try:
                outcome["summary"] = run_build(cfg)
            except RunError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=build)
        thread.start()
        deadline = time.monotonic() + 120
        while fake.requests < 2 and time.monotonic() < deadline:  # generation is under way on a worker
            time.sleep(0.05)
        import os
        import signal

        nanny = next(iter(cluster.workers.values()))
        os.kill(nanny.process.process.pid, signal.SIGKILL)  # the worker process; its nanny starts a new one
        thread.join(timeout=300)
        assert not thread.is_alive()
        out = cfg.out_dir()
        if "error" in outcome:
            assert not out.exists()  # failed loudly, nothing half-written under the run's name
        else:
            assert outcome["summary"].counts["items_annotated"] == len(rows)
        assert not list(out.parent.glob(".t.tmp-*"))
        again = run_build(cfg)
    assert again.counts["items_annotated"] == len(rows)
    assert again.llm["calls"] + again.llm["cache_hits"] == again.counts["llm_requests"]
    import sqlite3

    (cache,) = (tmp_path / "cache" / "embeddings").glob("embeddings-*.sqlite")
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM vectors").fetchone()[0] >= len(rows)
