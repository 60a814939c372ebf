import pytest

from conceptkit.pipelines.generation.parse import ParseError, cut_repetition, parse_candidates


def test_json_object():
    assert parse_candidates('{"concepts": ["long beak", "red wings"]}') == ["long beak", "red wings"]


def test_fenced_json_and_bare_list():
    assert parse_candidates('```json\n{"concepts": ["a b"]}\n```') == ["a b"]
    assert parse_candidates('["x", "y"]') == ["x", "y"]


def test_numbered_and_bulleted_lists_as_last_resort():
    text = "Here you go:\n1. striped tail\n2) webbed feet\n- sharp claws\n* loud call"
    assert parse_candidates(text) == ["striped tail", "webbed feet", "sharp claws", "loud call"]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        (None, "empty"),
        ('{"ideas": ["a"]}', "schema_violation"),
        ('{"concepts": [1, 2]}', "schema_violation"),
        ('{"concepts": ["unterminated', "malformed_json"),
        ("I cannot help with that.", "unparseable"),
        ("42", "schema_violation"),
    ],
)
def test_bad_answers_raise_typed_errors(text, reason):
    with pytest.raises(ParseError) as info:
        parse_candidates(text)
    assert info.value.reason == reason


def test_repetition_loop_is_cut():
    assert cut_repetition(["a", "b", "a", "A ", "a", "a"]) == ["a", "b", "a"]
    assert len(parse_candidates('{"concepts": ' + '["same"' + ', "same"' * 50 + "]}")) == 2
