"""annotation.score_layout: packed score bytes hold the same values as the list layout, and every reader of a run
(eval, review, refresh, inspect, the card's own loading code) reads them."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import build_annotation_variants, demo_rows, write_csv
from conceptkit.pipelines.annotation.refresh import refresh_run
from conceptkit.pipelines.cli.labelstudio import load_run
from conceptkit.pipelines.evaluation.run import evaluate_run
from conceptkit.pipelines.runs.inspection import inspect_tables
from conceptkit.schemas.annotations import annotations_schema, score_column, score_matrix, stored_schema
from conceptkit.schemas.io import SchemaMismatch, read_table, write_table


def _sorted(table: pa.Table) -> pa.Table:
    return table.take(np.argsort(table.column("item_id").to_pylist()))


def test_packed_scores_are_the_list_scores_for_every_reader(tmp_path):
    rows = demo_rows(per_class=12, classes=["cooking", "sports", "weather"])
    items = write_csv(tmp_path / "items.csv", rows)
    runs = build_annotation_variants(tmp_path, items, {layout: {"score_dtype": "float16", "score_layout": layout}
                                                       for layout in ("list", "packed")})
    a, b = (_sorted(read_table(runs[d] / "annotations", stored_schema(runs[d] / "annotations", 12))) for d in runs)
    assert pa.types.is_fixed_size_list(a.schema.field("scores").type)
    assert b.schema.field("scores").type == pa.binary(12 * 2)
    assert np.array_equal(score_matrix(a), score_matrix(b))  # bit for bit: the same float16 values
    for column in ("item_id", "top_concept_ids", "top_scores", "concept_ids"):
        assert a.column(column).equals(b.column(column)), column
    with pytest.raises(SchemaMismatch, match="scores"):
        read_table(runs["packed"] / "annotations", annotations_schema(12, "float16"))

    # readers: eval, review and inspect see the same numbers in both layouts
    ea, eb = (evaluate_run(runs[d], seeds=1, shots=[1], report=False).results for d in runs)
    assert ea == eb
    assert load_run(runs["list"]).predicted() == load_run(runs["packed"]).predicted()
    ia, ib = (inspect_tables(runs[d]).tables["score_distributions"] for d in runs)
    assert ia.equals(ib)

    # the card's own loading code runs on the packed run and gives the matrix
    card = (runs["packed"] / "README.md").read_text(encoding="utf-8")
    assert "dtype: binary" in card
    snippet = card.split("```python\n", 1)[1].split("\n\n", 1)[0]  # polars: read the tables, the scores, top-k
    assert "np.frombuffer" in snippet
    scope: dict = {}
    exec(snippet, scope)
    ids = scope["annotations"]["item_id"].to_list()
    assert np.array_equal(scope["scores"][np.argsort(ids)], score_matrix(b))

    # a refresh writes its new items in the run's layout
    extra = write_csv(tmp_path / "more.csv", rows + [{"id": "new-1", "text": "We roasted peppers in the oven.",
                                                      "label": "cooking"}])
    assert refresh_run(runs["packed"], extra).changed
    after = read_table(runs["packed"] / "annotations", stored_schema(runs["packed"] / "annotations", 12))
    assert after.num_rows == b.num_rows + 1
    assert {pq.read_schema(p).field("scores").type for p in (runs["packed"] / "annotations").glob("*.parquet")} \
        == {pa.binary(24)}
    assert score_matrix(after).shape == (after.num_rows, 12)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_packed_column_round_trips_and_skips_statistics(tmp_path, dtype):
    scores = np.random.default_rng(0).standard_normal((5, 3)).astype(dtype)
    table = pa.table({"item_id": list("abcde"), "text": ["t"] * 5, "label": [None] * 5, "split": ["train"] * 5,
                      "top_concept_ids": [[0]] * 5, "top_scores": [[0.5]] * 5, "concept_ids": [[]] * 5,
                      "scores": score_column(scores, "packed")})
    schema = annotations_schema(3, dtype, "packed")
    path = write_table(tmp_path / "s.parquet", table, schema)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert not columns["scores"].is_stats_set and "RLE_DICTIONARY" not in columns["scores"].encodings
    back = read_table(path, schema)
    assert np.array_equal(score_matrix(back), scores.astype(np.float32))
    assert np.array_equal(score_matrix(back.slice(2, 2)), scores[2:4].astype(np.float32))
    assert score_matrix(back.slice(0, 0)).shape == (0, 3)
    assert stored_schema(tmp_path, 3).field("scores").type == pa.binary(3 * np.dtype(dtype).itemsize)
