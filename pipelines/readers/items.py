"""Read and validate the input items (Parquet, CSV or JSON Lines) before anything is written.

``load_items`` checks the file as a whole and raises ``InputError`` with a one-line message naming the file and the
problem (missing file, unknown format, missing column, empty dataset, duplicate ids, non-UTF-8 text, a class with
no items). Row-level problems (empty or over-long text, a missing id, a label outside the class list) are not
errors: ``validate_row`` returns a reject reason and the row goes to rejects.parquet.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from conceptkit.pipelines.config import ItemsConfig

SPLIT_NAME = re.compile(r"\w+")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class InputError(ValueError):
    """The input items cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LoadedItems:
    table: pa.Table  # item_id, text, label (may be null), split, duplicate (a repeated id), in input order
    classes: tuple[str, ...]
    labelled: bool
    path: str
    modality: str = "text"  # "image": ``text`` holds each item's image path (absolute)
    has_split_column: bool = False  # the file said each item's split (else: items.holdout decided)


def labelled_train(loaded: LoadedItems) -> list[tuple[str, str, str]]:
    """(item id, text, label) of every labelled, non-duplicate item of the train split, in input order (a
    missing text is ""): what mining and the generation sample learn from; the held-out splits never are."""
    t = loaded.table
    return [(item_id, text or "", label) for item_id, text, label, split, dup in zip(
        t.column("item_id").to_pylist(), t.column("text").to_pylist(), t.column("label").to_pylist(),
        t.column("split").to_pylist(), t.column("duplicate").to_pylist())
        if label is not None and split == "train" and not dup]


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unknown item file format {path.suffix or '(no extension)'!r}; use .parquet, .csv or .jsonl "
            "(or set items.format)"
        )
    return fmt


def _scan_text(path: Path) -> int:
    """Check that the file is UTF-8 (InputError naming the line) and return its longest row in bytes.

    A CSV row continues over a line break inside quotes, so line lengths are summed while the quote count is odd.
    The reader's block size follows the longest row: an over-long row then becomes a ``text_too_long`` reject, as
    in Parquet, instead of failing the whole file."""
    longest = row = 0
    open_quote = False
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {lineno} is not valid UTF-8 (byte {exc.start})") from None
            row += len(line)
            open_quote ^= line.count(b'"') % 2 == 1
            if not open_quote:
                longest, row = max(longest, row), 0
    return max(longest, row)


def _csv_header(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _read(path: Path, fmt: str) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_table(path)
        block_size = min(max(1 << 22, 2 * _scan_text(path) + 4096), (1 << 31) - 1)
        if fmt == "csv":
            # Every column is text exactly as written: ids 001 and 1.50 stay themselves, labels 01 and 1 stay two
            # classes, NA / N/A / null are labels like any other.
            header = _csv_header(path)
            options = pcsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                          strings_can_be_null=False, quoted_strings_can_be_null=False)
            return pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=block_size),
                                 parse_options=pcsv.ParseOptions(newlines_in_values=True), convert_options=options)
        return pjson.read_json(path, read_options=pjson.ReadOptions(block_size=block_size))
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: cannot read as {fmt}: {message}") from None


def _as_string(table: pa.Table, column: str, path: Path | None = None) -> pa.Array:
    col = table.column(column)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_nested(col.type):
        raise InputError(f"{path}: column {column!r} is {col.type}, expected text (a nested column cannot be used)")
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        message = " ".join(str(exc).split())[:120]
        raise InputError(f"{path}: column {column!r} ({col.type}) cannot be read as text: {message}") from None


def read_classes_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"classes file not found: {path}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise InputError(f"{path}: no class names (one per line)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate class names {dupes}")
    return tuple(names)


def load_items(cfg: ItemsConfig) -> LoadedItems:
    """Read, check and normalise the items file described by ``cfg`` (see module docstring)."""
    if not cfg.path:
        raise InputError("no items file: give --items PATH (or items.path in the config)")
    path = Path(cfg.path)
    if not path.exists():
        raise InputError(f"items file not found: {path}")
    if path.is_dir():
        raise InputError(f"items path is a directory, expected a file: {path}")
    fmt = detect_format(path, cfg.format)
    table = _read(path, fmt)
    columns = table.column_names
    content_column = cfg.image_column or cfg.text_column
    if content_column not in columns:
        kind = "image" if cfg.image_column else "text"
        raise InputError(f"{path}: no {kind} column {content_column!r} (columns: {', '.join(columns)})")
    if table.num_rows == 0:
        raise InputError(f"{path}: the dataset is empty (0 rows)")
    if cfg.id_column and cfg.id_column in columns:
        ids = _as_string(table, cfg.id_column, path)
    elif cfg.id_column and cfg.id_column != "id":
        raise InputError(f"{path}: no id column {cfg.id_column!r} (columns: {', '.join(columns)})")
    else:
        ids = pa.array([f"row-{i}" for i in range(table.num_rows)], pa.string())
    non_null = pc.drop_null(ids)
    duplicate = [False] * table.num_rows
    if len(pc.unique(non_null)) != len(non_null) and cfg.on_duplicate_id == "reject":
        seen: set[str] = set()
        for i, item_id in enumerate(ids.to_pylist()):
            duplicate[i] = item_id is not None and item_id in seen
            seen.add(item_id)
    elif len(pc.unique(non_null)) != len(non_null):
        counts = pc.value_counts(non_null)
        dup = next(v["values"].as_py() for v in counts if v["counts"].as_py() > 1)
        n_dup = sum(1 for v in counts if v["counts"].as_py() > 1)
        raise InputError(f"{path}: duplicate item ids ({n_dup} ids repeated, e.g. {dup!r}); "
                         "set items.on_duplicate_id: reject to keep the first and reject the rest")
    labelled = bool(cfg.label_column) and cfg.label_column in columns
    if cfg.label_column and not labelled and cfg.label_column != "label":
        raise InputError(f"{path}: no label column {cfg.label_column!r} (columns: {', '.join(columns)})")
    labels = _as_string(table, cfg.label_column, path) if labelled else pa.nulls(table.num_rows, pa.string())
    if labelled:
        labels = pc.if_else(pc.equal(pc.utf8_trim_whitespace(labels), ""), pa.scalar(None, pa.string()), labels)
    found = sorted(set(pc.drop_null(labels).to_pylist())) if labelled else []
    if cfg.classes_file:
        classes = read_classes_file(cfg.classes_file)
        if labelled:
            empty = [c for c in classes if c not in set(found)]
            if empty:
                raise InputError(f"{path}: class {empty[0]!r} from {cfg.classes_file} has no items")
    elif labelled:
        if not found:
            raise InputError(f"{path}: label column {cfg.label_column!r} is empty; give --classes FILE")
        classes = tuple(found)
    else:
        raise InputError(f"{path}: no label column {cfg.label_column!r}; give --classes FILE for unlabelled items")
    text = _as_string(table, content_column, path)
    if cfg.image_column:
        base = path.resolve().parent
        text = pa.array([None if p is None or not p.strip() else str(base / p) for p in text.to_pylist()], pa.string())
    splits = _splits(table, cfg, path, ids, labels)
    items = pa.table({"item_id": ids, "text": text, "label": labels, "split": splits,
                      "duplicate": pa.array(duplicate, pa.bool_())})
    return LoadedItems(table=items, classes=tuple(classes), labelled=labelled, path=str(path),
                       modality="image" if cfg.image_column else "text",
                       has_split_column=cfg.split_column in table.column_names)


def holdout_splits(ids: list[str | None], labels: list[str | None], fraction: float,
                   default: str = "train") -> list[str]:
    """``test`` for ``round(fraction * n)`` of each class's ``n`` labelled items (at least one train item stays per
    class), chosen by a hash of the item id: deterministic, stratified, independent of row order."""
    out = [default] * len(ids)
    if fraction <= 0:
        return out
    by_class: dict[str, list[int]] = {}
    for i, (item_id, label) in enumerate(zip(ids, labels)):
        if label is not None and item_id is not None:
            by_class.setdefault(label, []).append(i)
    for rows in by_class.values():
        n_test = min(round(fraction * len(rows)), len(rows) - 1)
        ranked = sorted(rows, key=lambda i: hashlib.blake2b(str(ids[i]).encode(), digest_size=8).digest())
        for i in ranked[:n_test]:
            out[i] = "test"
    return out


def _splits(table: pa.Table, cfg: ItemsConfig, path: Path, ids: pa.Array, labels: pa.Array) -> pa.Array:
    """Each row's split: the split column's value when the file has one (blank: the default), else the held-out
    share of each class is ``test`` (``items.holdout``) and the rest the default."""
    if cfg.split_column not in table.column_names:
        return pa.array(holdout_splits(ids.to_pylist(), labels.to_pylist(), cfg.holdout, cfg.default_split),
                        pa.string())
    values = [v.strip() if v is not None and v.strip() else cfg.default_split
              for v in _as_string(table, cfg.split_column, path).to_pylist()]
    bad = next((v for v in values if not SPLIT_NAME.fullmatch(v)), None)
    if bad is not None:
        raise InputError(f"{path}: split column {cfg.split_column!r} holds {bad[:40]!r}; split names are letters, "
                         "digits and underscores (e.g. train, test, validation)")
    return pa.array(values, pa.string())


@dataclass(frozen=True)
class ImageRules:
    """Which image paths an items file may name: regular files of at most ``max_bytes``, inside ``root`` (the
    items file's folder) unless ``root`` is None (``--allow-outside-paths``)."""

    root: str | None
    max_bytes: int


def image_rules(cfg: ItemsConfig) -> ImageRules | None:
    if not cfg.image_column or not cfg.path:
        return None
    root = None if cfg.allow_outside_paths else str(Path(cfg.path).resolve().parent)
    return ImageRules(root=root, max_bytes=cfg.max_image_bytes)


def check_image_path(path: str, rules: ImageRules) -> str | None:
    """The reject reason for an image path, or None. Never opens the file: a FIFO or a device would block or
    never end."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return "image_not_found"
    if not stat.S_ISREG(st.st_mode):
        return "image_not_a_regular_file"
    if st.st_size > rules.max_bytes:
        return "image_too_large"
    if rules.root is not None:
        root = Path(rules.root)
        real = p.resolve()
        if real != root and root not in real.parents:
            return "image_outside_items_folder"
    return None


def validate_row(row: dict, *, classes: frozenset[str], max_text_chars: int,
                 image: ImageRules | None = None) -> str | None:
    """The reject reason for one item row, or None when it is usable (``image``: the row's text is an image path
    checked against these rules)."""
    if row.get("item_id") is None or not str(row["item_id"]).strip():
        return "missing_id"
    if row.get("duplicate"):
        return "duplicate_id"
    text = row.get("text")
    if text is None or not text.strip():
        return "empty_text"
    if len(text) > max_text_chars:
        return "text_too_long"
    if image is not None:
        reason = check_image_path(text, image)
        if reason is not None:
            return reason
    label = row.get("label")
    if label is not None and label not in classes:
        return "unknown_label"
    return None
