"""A persistent cache of embeddings keyed by (model, content hash), safe for concurrent writers.

In: texts (or other content strings: image paths plus file hashes). Out: float32 vectors. Side effects: reads and
writes one SQLite file per model under the cache directory. A rerun, or a run over a grown dataset, embeds only
content it has not seen with that model. Vectors are stored as raw float32 bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_CHUNK = 500  # keys per SELECT ... IN (...): under SQLite's variable limit


def content_key(content: str) -> bytes:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    def __init__(self, directory: str | os.PathLike[str], model_id: str, dimension: int) -> None:
        self.dimension = dimension
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:16]
        self.path = Path(directory) / f"embeddings-{digest}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?), ('dimension', ?)", (model_id, str(dimension)))

    # Connections are per thread and per process: a pickled cache (a runner shipping a set-up DoFn) reconnects.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=120000")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        conn = self._conn()
        for i in range(0, len(keys), _CHUNK):
            chunk = list(keys[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for key, blob in conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> bool:
        """Store vectors; False (and a warning) when the disk is full: the cache is an optimisation, the build goes
        on with the vectors it computed, and the WAL file is truncated so the cache gives the space back."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL; a second ROLLBACK would mask it
                conn.execute("ROLLBACK")
            if "full" not in str(exc):
                raise
            logger.warning("embedding cache %s: %s; %d vectors not cached (the build continues)", self.path, exc,
                           len(items))
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass
            return False
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    def embed(self, contents: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors for ``contents`` (cached ones read, the rest encoded and stored); returns (vectors, n_encoded)."""
        keys = [content_key(c) for c in contents]
        found = self.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            vectors = encode([contents[first[k]] for k in missing])
            self.put_many(list(zip(missing, vectors)))
            found.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        out = np.empty((len(contents), self.dimension), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = found[key]
        return out, len(missing)
