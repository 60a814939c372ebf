"""Normalise and filter candidate concepts; every candidate keeps a status and a reason.

Two passes, both pure: ``filter_text`` (normalisation, length bounds, stop-list, class-name leakage, exact
duplicates) needs only strings; ``filter_embedded`` (too similar to a class name, near-duplicate merging through a
FAISS range search) needs unit-norm embeddings of the surviving concepts and of the class names. A merged
candidate points at the one it merged into, which gains its classes: a concept may belong to several classes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from conceptkit.pipelines.config import FilterConfig

_LEADING = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}[.):]|[a-z][.)])\s*", re.IGNORECASE)
_TRAILING = re.compile(r"[\s.,;:!?]+$")
_QUOTES = "\"'`“”‘’«»"


@dataclass
class Candidate:
    """One proposed concept on its way through the filters (a row of candidates.parquet)."""

    raw: str
    classes: list[str]
    prompt_id: str
    prompt: str
    model: str
    sample: int
    position: int = 0  # index in the LLM's answer: with (class, prompt, sample) a stable order on every runner
    concept: str = ""
    status: str = "accepted"
    reason: str | None = None
    merged_into: str | None = None
    selected: bool = False
    candidate_id: str = field(default="")
    source: str = "llm"  # "llm" (an answer), "mined" (a phrase of the train items), "human"

    def __post_init__(self) -> None:
        if not self.concept:
            self.concept = normalize_concept(self.raw)
        if not self.candidate_id:
            key = "\x1f".join([self.classes[0] if self.classes else "", self.prompt_id, str(self.sample), self.raw])
            self.candidate_id = hashlib.sha256(key.encode()).hexdigest()[:16]

    def reject(self, reason: str) -> None:
        self.status, self.reason = "rejected", reason

    def merge_into(self, other: "Candidate", reason: str) -> None:
        self.status, self.reason, self.merged_into = "merged", reason, other.candidate_id
        for c in self.classes:
            if c not in other.classes:
                other.classes.append(c)

    def to_row(self) -> dict:
        return {
            "candidate_id": self.candidate_id,
            "concept": self.concept,
            "raw": self.raw,
            "classes": list(self.classes),
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "model": self.model,
            "sample": self.sample,
            "status": self.status,
            "reason": self.reason,
            "merged_into": self.merged_into,
            "selected": self.selected,
            "source": self.source,
        }


def normalize_concept(raw: str) -> str:
    """Lower case, no list numbering or bullets, no surrounding quotes or trailing punctuation, single spaces, no
    control or format characters (a NUL would make the Label Studio config invalid XML)."""
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else ch for ch in text)
    text = _LEADING.sub("", text)
    text = text.strip().strip(_QUOTES).strip()
    text = _TRAILING.sub("", text)
    text = " ".join(text.split()).casefold()
    return text.strip(_QUOTES).strip()


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def duplicate_key(concept: str) -> str:
    """What makes two concepts the same: their words, singular (embeddings put "recipe"/"recipes" at 0.90 and
    "cloud"/"clouds" at 0.83, below any safe near-duplicate threshold)."""
    return " ".join(_singular(w) for w in re.findall(r"\w+", concept))


def _name_variants(name: str) -> set[str]:
    base = " ".join(normalize_concept(name).replace("_", " ").split())
    variants = {base}
    if base.endswith("s") and len(base) > 3:
        variants.add(base[:-1])
    else:
        variants.add(base + "s")
    return {v for v in variants if v}


def leaks_name(concept: str, names: Iterable[str]) -> str | None:
    """The first name (or its simple plural/singular) that occurs as whole words in ``concept``, else None."""
    for name in names:
        for variant in _name_variants(name):
            if re.search(rf"(?<!\w){re.escape(variant)}(?!\w)", concept):
                return name
    return None


@lru_cache(maxsize=4096)
def content_words(text: str) -> frozenset[str]:
    """The words of ``text`` that carry meaning (no English stop words), singular. Cached: every candidate asks
    for its class names' and its prompt's words, which are few and repeat."""
    from conceptkit.pipelines.generation.mining import stop_words

    stop = stop_words()
    return frozenset(_singular(w) for w in re.findall(r"[^\W_]+", normalize_concept(text).replace("_", " "))
                     if w not in stop)


def fragment_of(concept: str, names: Iterable[str]) -> str | None:
    """The first name one of whose content words (singular or plural, hyphen parts apart) is a word of
    ``concept``: "bunting" or "billed" for "Indigo Bunting" / "Yellow-billed Cuckoo"."""
    words = {_singular(w) for w in re.findall(r"[^\W_]+", concept)}
    for name in names:
        if words & content_words(name):
            return name
    return None


def echoes(concept: str, echo_words: frozenset[str]) -> bool:
    """Every content word of ``concept`` is a word of the prompt or the domain ("trivia questions")."""
    words = content_words(concept)
    return bool(words) and words <= echo_words


def filter_text(
    candidates: Sequence[Candidate], cfg: FilterConfig, *, synonyms: Mapping[str, Sequence[str]] | None = None,
    classes: Sequence[str] = (), domain: str = "",
) -> None:
    """First pass, in place: length bounds, stop-list, class-name leakage (the candidate's class names and their
    synonyms whole, their words as fragments, any other class's name whole), echoes of the prompt's or the
    domain's own words, duplicates (same words, singular)."""
    synonyms = {**cfg.synonyms, **(synonyms or {})}
    stop = {normalize_concept(s) for s in cfg.stop_list}
    first_by_text: dict[str, Candidate] = {}
    domain_words = content_words(domain)
    class_words = {w for c in classes for w in content_words(c)}
    for cand in candidates:
        if cand.status != "accepted":
            continue
        text = cand.concept
        if not text:
            cand.reject("empty")
        elif len(text) < cfg.min_chars:
            cand.reject("too_short")
        elif len(text) > cfg.max_chars or len(text.split()) > cfg.max_words:
            cand.reject("too_long")
        elif text in stop:
            cand.reject("stop_list")
        elif leaks_name(text, [n for c in cand.classes for n in (c, *synonyms.get(c, ()))]):
            cand.reject("class_name_leak")
        elif cfg.class_name_fragments and fragment_of(text, cand.classes):
            cand.reject("class_name_fragment")
        elif leaks_name(text, [c for c in classes if c not in cand.classes]):
            cand.reject("other_class_name")
        elif cfg.echo_filter and echoes(text, domain_words | (set() if cand.source == "mined" else
                                                              content_words(cand.prompt) - class_words)):
            cand.reject("echoes_prompt")
        elif duplicate_key(text) in first_by_text:
            cand.merge_into(first_by_text[duplicate_key(text)], "duplicate")
        else:
            first_by_text[duplicate_key(text)] = cand


def filter_embedded(
    candidates: Sequence[Candidate],
    embeddings: np.ndarray,
    class_embeddings: Mapping[str, np.ndarray],
    cfg: FilterConfig,
) -> None:
    """Second pass, in place, over the candidates still accepted (``embeddings`` row i is the i-th of those).

    Rejects a concept whose cosine to one of its class names is >= ``cfg.class_name_cosine``; then merges
    near-duplicates (cosine >= ``cfg.near_duplicate_cosine``) into the earliest candidate of each group.
    """
    import faiss

    accepted = [c for c in candidates if c.status == "accepted"]
    if len(accepted) != len(embeddings):
        raise ValueError(f"embeddings has {len(embeddings)} rows for {len(accepted)} accepted candidates")
    if not accepted:
        return
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    keep = np.ones(len(accepted), dtype=bool)
    for i, cand in enumerate(accepted):
        sims = [float(emb[i] @ class_embeddings[c]) for c in cand.classes if c in class_embeddings]
        if sims and max(sims) >= cfg.class_name_cosine:
            cand.reject("similar_to_class_name")
            keep[i] = False
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, dist, ids = index.range_search(emb, cfg.near_duplicate_cosine)
    for i, cand in enumerate(accepted):
        if not keep[i]:
            continue
        for j in ids[lims[i] : lims[i + 1]]:
            if j > i and keep[j]:
                accepted[j].merge_into(cand, "near_duplicate")
                keep[j] = False


def filter_candidates(
    candidates: list[Candidate], classes: Sequence[str], cfg: FilterConfig, embedder, cache_dir, *, domain: str = ""
) -> tuple[list[Candidate], np.ndarray]:
    """Both passes over ``candidates`` (sorted in place into a stable order whatever the runner delivered: by
    class, prompt, sample, then the answer's own order): the accepted candidates and their unit-norm embeddings
    (through ``embedder.encode_cached`` and ``cache_dir``). Every candidate's class must be in ``classes``."""
    classes = list(classes)
    candidates.sort(key=lambda c: (classes.index(c.classes[0]), c.prompt_id, c.sample, c.position))
    filter_text(candidates, cfg, classes=classes, domain=domain)
    accepted = [c for c in candidates if c.status == "accepted"]
    emb, _ = embedder.encode_cached([c.concept for c in accepted], cache_dir)
    names, _ = embedder.encode_cached(classes, cache_dir)
    filter_embedded(candidates, emb, dict(zip(classes, names)), cfg)
    keep = [i for i, c in enumerate(accepted) if c.status == "accepted"]
    return [accepted[i] for i in keep], emb[keep]


def count_by_status(candidates: Iterable[Candidate]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cand in candidates:
        key = cand.status if cand.status != "rejected" else f"rejected:{cand.reason}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
