"""annotation.score_dtype: float16 score vectors at half the size, the same labels, and every reader agrees."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import build_annotation_variants, demo_rows, write_csv
from conceptkit.pipelines.annotation.labels import for_run
from conceptkit.pipelines.annotation.refresh import refresh_run
from conceptkit.pipelines.cli.labelstudio import load_run
from conceptkit.pipelines.evaluation.run import evaluate_run
from conceptkit.schemas.annotations import score_matrix, stored_schema
from conceptkit.schemas.io import read_table


def test_float16_scores_halve_the_vectors_and_keep_one_rule(tmp_path):
    rows = demo_rows(per_class=12, classes=["cooking", "sports", "weather"])
    items = write_csv(tmp_path / "items.csv", rows)
    runs = build_annotation_variants(tmp_path, items, {d: {"score_dtype": d} for d in ("float32", "float16")})
    a, b = (read_table(runs[d] / "annotations", stored_schema(runs[d] / "annotations", 12)) for d in runs)
    assert b.schema.field("scores").type.value_type == pa.float16()
    assert a.schema.field("scores").type.value_type == pa.float32()
    assert b.column("scores").nbytes * 2 <= a.column("scores").nbytes + 64  # half the bytes
    sa, sb = score_matrix(a), score_matrix(b)
    order_a = np.argsort(a.column("item_id").to_pylist())
    order_b = np.argsort(b.column("item_id").to_pylist())
    assert np.abs(sa[order_a] - sb[order_b]).max() < 1e-3
    # the stored labels are what the rule decides from the stored (rounded) scores, for every reader
    names = pq.read_table(runs["float16"] / "concepts.parquet").column("concept").to_pylist()
    decided = for_run(runs["float16"], names).decide(sb, b.column("label").to_pylist())
    assert [sorted(np.flatnonzero(r).tolist()) for r in decided] == b.column("concept_ids").to_pylist()
    assert load_run(runs["float16"]).predicted() == {(i, c) for i, cs in zip(b.column("item_id").to_pylist(),
                                                                             b.column("concept_ids").to_pylist())
                                                      for c in cs}
    # readers: eval reads the run; a refresh adds new items in the run's dtype
    assert evaluate_run(runs["float16"], seeds=1, shots=[1], report=False).results
    extra = write_csv(tmp_path / "more.csv", rows + [{"id": "new-1", "text": "We roasted peppers in the oven.",
                                                      "label": "cooking"}])
    assert refresh_run(runs["float16"], extra).changed
    after = read_table(runs["float16"] / "annotations", stored_schema(runs["float16"] / "annotations", 12))
    assert after.num_rows == b.num_rows + 1
    assert {pq.read_schema(p).field("scores").type.value_type for p in (runs["float16"] / "annotations").glob("*.parquet")} \
        == {pa.float16()}
