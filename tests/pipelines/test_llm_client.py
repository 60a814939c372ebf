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
