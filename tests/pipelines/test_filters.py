import numpy as np

from conceptkit.pipelines.config import FilterConfig
from conceptkit.pipelines.selection.filters import Candidate, count_by_status, filter_embedded, filter_text, leaks_name, normalize_concept


def cand(raw, cls="bird", prompt="q", **kw):
    return Candidate(raw=raw, classes=[cls], prompt_id="p", prompt=prompt, model="m", sample=0, **kw)


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


def test_class_name_fragments_other_class_names_and_echoes_have_their_reasons():
    classes = ["indigo bunting", "yellow-billed cuckoo", "sports"]
    cands = [
        cand("bunting song", cls="indigo bunting"),        # a word of its own class name
        cand("billed tip", cls="yellow-billed cuckoo"),    # a hyphen part of it
        cand("Indigo plumage", cls="indigo bunting"),
        cand("sports fans", cls="indigo bunting"),         # another class's whole name
        cand("trivia questions", cls="sports", prompt="List trivia questions about \"sports\""),
        cand("bird photographs", cls="sports"),            # every word is the domain's
        cand("blue plumage", cls="indigo bunting"),
    ]
    filter_text(cands, FilterConfig(), classes=classes, domain="bird photographs")
    assert [(c.concept, c.reason) for c in cands] == [
        ("bunting song", "class_name_fragment"), ("billed tip", "class_name_fragment"),
        ("indigo plumage", "class_name_fragment"), ("sports fans", "other_class_name"),
        ("trivia questions", "echoes_prompt"), ("bird photographs", "echoes_prompt"), ("blue plumage", None),
    ]


def test_fragment_and_echo_filters_can_be_turned_off():
    cands = [cand("bunting song", cls="indigo bunting"), cand("bird photographs", cls="indigo bunting")]
    filter_text(cands, FilterConfig(class_name_fragments=False, echo_filter=False), classes=["indigo bunting"],
                domain="bird photographs")
    assert [c.status for c in cands] == ["accepted", "accepted"]


def test_a_mined_phrase_is_not_an_echo_of_its_own_provenance_text():
    c = cand("train items", cls="bird", prompt="held by 5 train items of the class", source="mined")
    filter_text([c], FilterConfig(), classes=["bird"])
    assert c.status == "accepted"


def test_generic_concepts_point_at_no_class_and_are_rejected_with_a_reason():
    from conceptkit.pipelines.config import SelectionConfig
    from conceptkit.pipelines.selection.stage import select_concepts

    classes = ["a", "b", "c"]
    means = {k: v for k, v in zip(classes, np.eye(3, 4, dtype=np.float32))}
    emb = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.57, 0.57, 0.59, 0.1]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cands = [cand("alpha", cls="a"), cand("beta", cls="b"), cand("gamma", cls="c"), cand("anything", cls="a")]
    rows, _ = select_concepts(cands, emb, classes, class_means=means, cfg=SelectionConfig(k_per_class=2),
                              generic_spread=0.03)
    assert cands[3].reason == "generic" and [r["concept"] for r in rows] == ["alpha", "beta", "gamma"]
    # never when it would leave a class with nothing to pick
    only = [cand("anything", cls="a"), cand("beta", cls="b"), cand("gamma", cls="c")]
    rows, _ = select_concepts(only, emb[[3, 1, 2]], classes, class_means=means, cfg=SelectionConfig(k_per_class=2),
                              generic_spread=0.03)
    assert only[0].status == "accepted" and len(rows) == 3
