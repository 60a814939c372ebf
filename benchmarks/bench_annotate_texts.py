"""Texts for the annotation benchmarks: synthetic short texts from a word list, the real TREC questions, and
concept answers for the fake LLM.

``synthetic_items(n, seed)`` -> (ids, texts, labels): one of six topics per item, a short sentence of 6-10 words
made by combining words written here (no dataset text); deterministic in (n, seed). ``trec_items(limit)`` reads TREC.train from ../shared/data (the coarse label is the class).
``FAKE_ANSWERS`` are the fake LLM's concepts per class for both sets. Imports numpy only, so it also runs on the
GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

TOPICS: dict[str, list[str]] = {
    "cooking": ["soup", "oven", "recipe", "garlic", "pasta", "kitchen", "bread", "sauce", "pan", "spices", "dinner",
                "butter", "salad", "noodles", "pepper", "chef", "dough", "grill", "onions", "breakfast"],
    "sports": ["match", "coach", "goal", "team", "stadium", "runner", "league", "referee", "ball", "season",
               "tennis", "marathon", "players", "trophy", "pitch", "striker", "relay", "tournament", "keeper", "fans"],
    "weather": ["rain", "storm", "forecast", "snow", "wind", "clouds", "thunder", "heat", "fog", "frost", "drizzle",
                "humidity", "sunshine", "hail", "breeze", "flood", "drought", "temperature", "sky", "showers"],
    "travel": ["flight", "hotel", "passport", "luggage", "train", "airport", "ticket", "beach", "tour", "map",
               "station", "ferry", "visa", "hostel", "suitcase", "border", "cruise", "guidebook", "taxi", "journey"],
    "technology": ["laptop", "phone", "software", "battery", "network", "server", "app", "screen", "keyboard",
                   "router", "update", "cloud", "chip", "browser", "database", "printer", "charger", "camera",
                   "sensor", "code"],
    "music": ["guitar", "concert", "album", "singer", "drums", "piano", "melody", "band", "chorus", "violin",
              "playlist", "orchestra", "song", "lyrics", "bass", "studio", "festival", "rhythm", "trumpet", "choir"],
}
ADJECTIVES = ["old", "new", "quiet", "loud", "small", "huge", "cheap", "late", "early", "busy", "broken", "bright",
              "cold", "warm", "strange", "famous", "local", "long", "short", "heavy", "empty", "crowded", "slow",
              "fast", "simple", "odd", "second", "final", "main", "favourite"]
VERBS = ["ruined", "started", "changed", "surprised", "delayed", "improved", "missed", "followed", "replaced",
         "needed", "found", "helped", "stopped", "filled", "shaped", "carried", "opened", "joined", "moved", "ended"]
SUBJECTS = ["my sister", "the neighbours", "our group", "a friend", "the kids", "everyone", "my uncle", "the class",
            "two students", "the manager", "a stranger", "the family", "our team", "my colleague", "the visitors"]
TEMPLATES = [
    "the {a} {n1} {v} the {n2} again",
    "why did the {a} {n1} stop {s} from the {n2}",
    "{s} talked about the {a} {n1} and the {n2} all evening",
    "is the {n1} really better than the {a} {n2}",
    "{s} {v} the {a} {n1} near the {n2}",
    "a {a} {n1} and a {n2} {v} our whole weekend",
    "how much does a {a} {n1} with a {n2} cost",
    "nobody expected the {n1} to be so {a} after the {n2}",
]

# Concepts the fake LLM proposes per class (written for this benchmark; none contains its class name).
FAKE_ANSWERS: dict[str, list[str]] = {
    "cooking": ["oven temperature", "fresh ingredients", "chopping vegetables", "baking bread", "frying pan",
                "recipe steps", "simmering sauce", "dinner table"],
    "sports": ["final score", "team practice", "goalkeeper", "marathon runners", "tennis serve", "league match",
               "stadium crowd", "referee whistle"],
    "weather": ["heavy rain", "snowfall", "heat wave", "thunderstorm", "strong wind", "cloudy sky", "morning fog",
                "weekly forecast"],
    "travel": ["flight delay", "hotel booking", "passport control", "lost luggage", "sightseeing tour",
               "train station", "boarding pass", "beach holiday"],
    "technology": ["software update", "laptop battery", "wifi network", "mobile app", "cloud storage",
                   "charging cable", "computer screen", "server outage"],
    "music": ["guitar chords", "live concert", "album release", "singing voice", "orchestra", "drummer",
              "concert hall", "song lyrics"],
    # TREC coarse classes
    "ABBR": ["acronym", "abbreviation meaning", "short form", "initials", "stands for", "expanded name",
             "letters of a term", "full form"],
    "DESC": ["definition", "explanation", "reason why", "description", "meaning of a word", "how something works",
             "cause", "manner"],
    "ENTY": ["animal", "product", "colour", "sport", "food", "invention", "language", "disease"],
    "HUM": ["famous person", "inventor", "author", "group of people", "politician", "actor", "company founder",
            "athlete"],
    "LOC": ["city", "country", "mountain", "river", "state", "address", "capital city", "continent"],
    "NUM": ["date", "year", "number of things", "distance", "price", "population", "speed", "temperature value"],
}


def synthetic_items(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, labels) of ``n`` synthetic short texts (6-10 words, one of six topics each)."""
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    t = rng.integers(len(topics), size=n)
    n1 = rng.integers(20, size=n)
    n2 = (n1 + 1 + rng.integers(19, size=n)) % 20
    tpl, adj = rng.integers(len(TEMPLATES), size=n), rng.integers(len(ADJECTIVES), size=n)
    verb, subj = rng.integers(len(VERBS), size=n), rng.integers(len(SUBJECTS), size=n)
    texts, labels = [], []
    for i in range(n):
        words = TOPICS[topics[t[i]]]
        texts.append(TEMPLATES[tpl[i]].format(a=ADJECTIVES[adj[i]], n1=words[n1[i]], n2=words[n2[i]],
                                              v=VERBS[verb[i]], s=SUBJECTS[subj[i]]))
        labels.append(topics[t[i]])
    return [f"s{i:08d}" for i in range(n)], texts, labels


def trec_items(limit: int | None = None, data_dir: Path = DATA_DIR) -> tuple[list[str], list[str], list[str]] | None:
    """(ids, questions, coarse labels) from TREC.train; None if the file is absent."""
    path = data_dir / "trec" / "TREC.train"
    if not path.exists():
        return None
    ids, texts, labels = [], [], []
    for line in path.read_text(encoding="latin-1").splitlines():
        tag, _, question = line.partition(" ")
        if question.strip():
            ids.append(f"trec-{len(ids)}")
            texts.append(question.strip())
            labels.append(tag.split(":", 1)[0])
    if limit is not None:
        ids, texts, labels = ids[:limit], texts[:limit], labels[:limit]
    return ids, texts, labels


def concept_phrases(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct short concept phrases built from the word lists (for 'a few hundred concepts')."""
    rng = np.random.default_rng(seed)
    nouns = [w for words in TOPICS.values() for w in words]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        phrase = f"{ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]} {nouns[int(rng.integers(len(nouns)))]}"
        if rng.random() < 0.5:
            phrase += f" and {nouns[int(rng.integers(len(nouns)))]}"
        if phrase not in seen:
            seen.add(phrase)
            out.append(phrase)
    return out


def dbpedia_texts(limit: int | None = None, data_dir: Path = DATA_DIR) -> list[str]:
    """DBpedia-14 sample abstracts (test.csv, then val.csv); [] if absent."""
    import csv

    texts: list[str] = []
    for name in ("test.csv", "val.csv"):
        path = data_dir / "dbpedia14_sample" / name
        if path.exists():
            with path.open(encoding="utf-8", newline="") as handle:
                texts.extend(row[1].strip() for row in csv.reader(handle) if len(row) >= 2 and row[1].strip())
    return texts[:limit] if limit is not None else texts


def dbpedia_sentences(data_dir: Path = DATA_DIR) -> list[str]:
    """The DBpedia abstracts split into sentences of at least four words (more, shorter real texts)."""
    import re

    split = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
    return [s for text in dbpedia_texts(data_dir=data_dir) for s in split.split(text) if len(s.split()) >= 4]
