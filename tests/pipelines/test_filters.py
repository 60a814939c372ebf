import numpy as np

from conceptkit.pipelines.config import FilterConfig
from conceptkit.pipelines.selection.filters import Candidate, count_by_status, filter_embedded, filter_text, leaks_name, normalize_concept


def cand(raw, cls="bird", **kw):
    return Candidate(raw=raw, classes=[cls], prompt_id="p", prompt="q", model="m", sample=0, **kw)


def test_normalize():
    assert normalize_concept("  1. Long Curved   Beak. ") == "long curved beak"
    assert normalize_concept('- "Red wings"') == "red wings"
    assert normalize_concept("• webbed feet;") == "webbed feet"


def test_leaks_name_whole_words_and_plural():
    assert leaks_name("a small bird nest", ["bird"]) == "bird"
    assert leaks_name("birds in flight", ["bird"]) == "bird"
    assert leaks_name("birdhouse", ["bird"]) is None


def test_text_filters_keep_every_candidate_with_a_reason():
    cfg = FilterConfig(max_words=3, stop_list=("thing",))
    cands = [cand("long beak"), cand(""), cand("a very long concept phrase here"), cand("Thing"), cand("bird song"),
             cand("Long beak."), cand("ab")]
    filter_text(cands, cfg)
    assert [(c.status, c.reason) for c in cands] == [
        ("accepted", None), ("rejected", "empty"), ("rejected", "too_long"), ("rejected", "stop_list"),
        ("rejected", "class_name_leak"), ("merged", "duplicate"), ("rejected", "too_short"),
    ]
    assert cands[5].merged_into == cands[0].candidate_id


def test_synonyms_count_as_leaks():
    c = [cand("avian flight", cls="bird")]
    filter_text(c, FilterConfig(synonyms={"bird": ("avian",)}))
    assert c[0].reason == "class_name_leak"


def test_embedded_filters_merge_near_duplicates_across_classes():
    a, b, c, d = cand("red wings", "cardinal"), cand("crimson wings", "tanager"), cand("blue tail", "jay"), cand("cardinal look", "cardinal")
    e = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0.1, 0, 0.995]], dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    names = {"cardinal": np.array([0, 0, 1], np.float32), "tanager": np.array([0, 0, 1], np.float32),
             "jay": np.array([0, 0, 1], np.float32)}
    filter_embedded([a, b, c, d], e, names, FilterConfig(near_duplicate_cosine=0.95, class_name_cosine=0.9))
    assert (b.status, b.reason, b.merged_into) == ("merged", "near_duplicate", a.candidate_id)
    assert a.classes == ["cardinal", "tanager"]  # the merged concept keeps every class it came from
    assert (d.status, d.reason) == ("rejected", "similar_to_class_name")
    assert c.status == "accepted"
    assert count_by_status([a, b, c, d]) == {"accepted": 2, "merged": 1, "rejected:similar_to_class_name": 1}


def test_plural_and_punctuation_variants_are_duplicates():
    from conceptkit.pipelines.selection.filters import duplicate_key

    assert duplicate_key("recipes") == duplicate_key("recipe")
    assert duplicate_key("berries") == duplicate_key("berry")
    assert duplicate_key("boxes") == duplicate_key("box")
    assert duplicate_key("bus") != duplicate_key("bu") and duplicate_key("glass") == "glass"
    cands = [cand("Recipes"), cand("recipe"), cand("sunrise/sunset"), cand("sunrise sunset")]
    filter_text(cands, FilterConfig())
    assert [c.status for c in cands] == ["accepted", "merged", "accepted", "merged"]
