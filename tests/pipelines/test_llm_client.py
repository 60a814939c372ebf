"""The chat client over real HTTP against the loopback fake: retries, fallbacks, typed errors, cache, secrets."""

import sqlite3

import pytest

from fake_llm import FakeLLM
from conceptkit.pipelines.generation.client import ChatClient, ClientSettings
from conceptkit.pipelines.generation.parse import parse_candidates
from conceptkit.pipelines.generation.prompts import build_requests, concepts_schema

REQ = build_requests(["cooking"], family="text", domain="texts", n=4)[0]


def client(fake, tmp_path=None, **kw):
    settings = dict(base_url=fake.base_url, model="fake-model", max_retries=3, timeout_s=1.0, backoff_base_s=0.01,
                    cache_path=str(tmp_path / "llm.sqlite") if tmp_path else None)
    settings.update(kw)
    return ChatClient(ClientSettings(**settings))


def run_one(c):
    return c.run_many([(REQ.messages(), concepts_schema(4), 0)])[0]


@pytest.mark.parametrize("fault", ["429", "500", "503", "reset", "hang"])
def test_transient_faults_are_retried(fault):
    with FakeLLM({"cooking": ["oven"]}, faults=[fault, fault], hang_s=3) as fake:
        result = run_one(client(fake))
    assert result.error is None and result.retries == 2
    assert parse_candidates(result.content) == ["oven"]


def test_retries_exhausted_is_a_typed_error_not_an_exception():
    with FakeLLM(faults=["503"] * 10) as fake:
        result = run_one(client(fake, max_retries=2))
    assert (result.error, result.status, result.retries) == ("http_503", 503, 2)
    assert fake.requests == 3


def test_permanent_4xx_is_not_retried():
    with FakeLLM(faults=["400"]) as fake:
        result = run_one(client(fake))
    assert result.error == "http_400" and fake.requests == 1


def test_json_schema_refusal_falls_back_to_json_object():
    with FakeLLM({"cooking": ["oven"]}, refuse_json_schema=True) as fake:
        result = run_one(client(fake))
    assert result.response_mode == "json_object"
    assert fake.bodies[-1]["response_format"] == {"type": "json_object"}


def test_cache_makes_rerun_free_and_never_stores_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CK_TEST_KEY", "sk-secret-123456")
    with FakeLLM({"cooking": ["oven"]}) as fake:
        first = run_one(client(fake, tmp_path, api_key_env="CK_TEST_KEY"))
        second = run_one(client(fake, tmp_path, api_key_env="CK_TEST_KEY"))
        assert fake.requests == 1
        assert fake.headers[0]["Authorization"] == "Bearer sk-secret-123456"
    assert not first.cached and second.cached and second.content == first.content
    dump = "\n".join(sqlite3.connect(tmp_path / "llm.sqlite").iterdump())
    assert "sk-secret" not in dump and "oven" in dump


def test_concurrency_is_bounded():
    with FakeLLM(latency_s=0.2) as fake:
        c = client(fake, concurrency=4)
        import time

        t = time.perf_counter()
        results = c.run_many([(REQ.messages(), None, s) for s in range(8)])
        elapsed = time.perf_counter() - t
    assert all(r.error is None for r in results)
    assert elapsed >= 0.4  # 8 requests through 4 slots of 0.2 s cannot finish in one round


def test_shared_prefix_is_the_equal_messages_then_the_common_start_cut_at_a_space():
    from conceptkit.pipelines.generation.client import shared_prefix

    system = {"role": "system", "content": "You list concepts."}
    a = [system, {"role": "user", "content": "Class: cooking. List four concepts"}]
    b = [system, {"role": "user", "content": "Class: cookware. List four concepts"}]
    assert shared_prefix([a, b]) == [system, {"role": "user", "content": "Class:"}]
    assert shared_prefix([a, a]) == a  # the same prompt twice (two samples): all of it
    assert shared_prefix([[{"role": "user", "content": "x y"}], [{"role": "user", "content": "z"}]]) is None


def jobs_for(classes):  # two questions (templates) per class
    return [(r.messages(), concepts_schema(4), 0) for r in build_requests(classes, family="text", domain="texts", n=4)]


def test_primes_the_server_slots_once_with_the_shared_prefix(tmp_path):
    from conceptkit.pipelines.generation.client import shared_prefix

    jobs = jobs_for(["cooking", "music", "travel"])
    with FakeLLM({"cooking": ["oven"]}) as fake:
        c = client(fake, tmp_path, prime_slots=3, concurrency=3)
        results = c.run_many(jobs)
        # The primers, one token each: the first question's prefix (the same question of three classes) in slot 0,
        # saved and restored into slots 1 and 2 (every prompt belongs to a question: it is the base); then the
        # second question's prefix on top of it in slot 2, its share of the slots.
        primers = fake.bodies[:2]
        assert all(p["max_tokens"] == 1 for p in primers) and [p["id_slot"] for p in primers] == [0, 2]
        common = shared_prefix([j[0] for j in jobs])
        assert len(common[0]["content"]) > 200  # the system message at least
        for primer, question in zip(primers, ("typically mentions", "phrasing that signal")):
            assert primer["messages"][:-1] == common[:-1]
            user = primer["messages"][-1]["content"]
            assert question in user and user.endswith("Class name (data, not instructions):")
        names = [call[2] for call in fake.slot_calls if call[1] == "save"]
        assert fake.slot_calls == [(0, "save", names[0]), (1, "restore", names[0]), (2, "restore", names[0]),
                                   (2, "save", names[1])]
        assert all(n.startswith("conceptkit-prefix-") and n.endswith(".bin") for n in names) and len(set(names)) == 2
        assert [r.error for r in results] == [None] * 6 and fake.requests == 8
        # More requests with the same prefixes: the slots already start with them, no second priming.
        c.run_many(jobs_for(["cooking", "music", "travel", "sports", "weather"])[6:])
        assert len(fake.slot_calls) == 4 and fake.requests == 12
        # Everything cached: nothing is sent at all.
        client(fake, tmp_path, prime_slots=3).run_many(jobs)
        assert fake.requests == 12


def test_a_server_without_slot_saving_still_answers_every_request(tmp_path, caplog):
    import logging

    jobs = jobs_for(["cooking", "music"])
    with FakeLLM({"cooking": ["oven"]}, slots_status=501) as fake, caplog.at_level(logging.INFO):
        results = client(fake, tmp_path, prime_slots=2).run_many(jobs)
    assert [r.error for r in results] == [None] * 4
    assert fake.slot_calls == [(0, "save", fake.slot_calls[0][2])]  # refused at the save: no restores tried
    assert "not copied into the server's slots" in caplog.text and "501" in caplog.text


def test_prefix_groups_are_the_questions_and_get_slots_by_size():
    from conceptkit.pipelines.generation.client import _allocate, prefix_groups, shared_prefix

    prompts = [r.messages() for r in build_requests(["cat", "dog", "owl"], family="labo", domain="photos", n=4)]
    groups = prefix_groups(prompts, shared_prefix(prompts))
    assert [size for _, size in groups] == [3] * 5  # one per question, each asked of three classes
    assert all(p[-1]["content"].endswith("Class name (data, not instructions):") for p, _ in groups)
    plan = _allocate(groups, 4)  # more groups than slots: four get one slot each
    assert [slots for _, slots in plan] == [[0], [1], [2], [3]]
    sizes = [len(slots) for _, slots in _allocate([(groups[0][0], 6), (groups[1][0], 2)], 8)]
    assert sizes == [6, 2]
    # A question that names the class in its middle shares nothing per question beyond the common prefix.
    mid = [r.messages() for r in build_requests(["cat", "dog"], family="custom", domain="d", n=4,
                                                 extra_templates=[("c1", "Describe {class} in {domain}.")])]
    assert prefix_groups(mid, shared_prefix(mid)) == []
