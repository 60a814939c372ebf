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
        # The primer: the shared prefix, one token, slot 0; then slot 0 saved and restored into slots 1 and 2.
        primer = fake.bodies[0]
        assert primer["id_slot"] == 0 and primer["max_tokens"] == 1
        assert primer["messages"] == shared_prefix([j[0] for j in jobs])
        assert len(primer["messages"][0]["content"]) > 200  # the system message at least
        name = fake.slot_calls[0][2]
        assert fake.slot_calls == [(0, "save", name), (1, "restore", name), (2, "restore", name)]
        assert name.startswith("conceptkit-prefix-") and name.endswith(".bin")
        assert [r.error for r in results] == [None] * 6 and fake.requests == 7
        # More requests with the same prefix: the slots already start with it, no second primer.
        c.run_many(jobs_for(["sports", "weather"]))
        assert len(fake.slot_calls) == 3 and fake.requests == 11
        # Everything cached: nothing is sent at all.
        client(fake, tmp_path, prime_slots=3).run_many(jobs)
        assert fake.requests == 11


def test_a_server_without_slot_saving_still_answers_every_request(tmp_path, caplog):
    import logging

    jobs = jobs_for(["cooking", "music"])
    with FakeLLM({"cooking": ["oven"]}, slots_status=501) as fake, caplog.at_level(logging.INFO):
        results = client(fake, tmp_path, prime_slots=2).run_many(jobs)
    assert [r.error for r in results] == [None] * 4
    assert fake.slot_calls == [(0, "save", fake.slot_calls[0][2])]  # refused at the save: no restores tried
    assert "not copied into the server's slots" in caplog.text and "501" in caplog.text
