"""OpenAI-compatible chat client for concept generation, with a persistent cache and one retry layer.

In: chat messages plus sampling parameters. Out: ``LLMResult`` (the answer text, or a typed error), never an
exception for a bad answer or a failed request. Side effects: HTTP calls to the endpoint and reads/writes of the
SQLite cache. The ``openai`` client's own retries are off (``max_retries=0``); this module retries 429 (honouring
Retry-After), 5xx, connection errors and timeouts with exponential backoff and jitter, and treats other 4xx as
permanent. The API key is read from the named environment variable when the client is created and is never
stored in the cache, results or messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conceptkit.pipelines.generation.prompts import batched_classes

logger = logging.getLogger(__name__)

RESPONSE_MODES = ("json_schema", "json_object", "text")


def request_key(model: str, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
    """Cache key: a hash of the model name, the messages and the sampling parameters (no endpoint, no key)."""
    blob = json.dumps({"model": model, "messages": list(messages), "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class LLMCache:
    """A SQLite table of answers keyed by ``request_key``; safe for concurrent writers (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT, created REAL)"
            )

    # Connections are per thread and per process: a pickled cache (a runner shipping a set-up DoFn) reconnects.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._connect().execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def has_all(self, keys: Sequence[str]) -> bool:
        conn = self._connect()
        return all(conn.execute("SELECT 1 FROM answers WHERE key = ?", (k,)).fetchone() for k in keys)

    def put(self, key: str, model: str, answer: dict[str, Any]) -> bool:
        """Store an answer; False (and a warning) when the disk is full: the run keeps the answer it has."""
        try:
            self._connect().execute(
                "INSERT OR REPLACE INTO answers (key, model, answer, created) VALUES (?, ?, ?, ?)",
                (key, model, json.dumps(answer), time.time()),
            )
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            logger.warning("LLM cache %s: %s; this answer is not cached (the build continues)", self.path, exc)
            return False
        return True

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM answers").fetchone()[0]


@dataclass
class LLMResult:
    """The outcome of one request: ``content`` on success, else ``error`` (a reason code) and ``detail``."""

    key: str
    content: str | None = None
    error: str | None = None
    detail: str | None = None
    status: int | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0
    response_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClientSettings:
    """What a client needs, picklable into a Beam graph: the key's *variable name*, never the key."""

    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = 0.7
    max_tokens: int = 320
    seed: int | None = 0
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 4
    cache_path: str | None = None
    refresh_cache: bool = False
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0  # a server's Retry-After is honoured up to this, and counts as a retry
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    prompt_price: float = 0.0  # USD per million tokens
    completion_price: float = 0.0
    max_cost: float | None = None  # USD this client may spend
    extra_params: dict[str, Any] = field(default_factory=dict)
    # llama.cpp servers with a slot directory (the embedded one): before a batch of uncached requests, their
    # shared prompt prefix is processed once and copied into this many slots, so each request processes only its
    # own tail. 0: off. Any failure only skips it.
    prime_slots: int = 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_price + completion_tokens * self.completion_price) / 1e6

    def sampling_params(self, sample: int) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            params["seed"] = self.seed + sample
        params["sample"] = sample
        params.update(self.extra_params)
        return params


MAX_ANSWER_CHARS = 200_000  # a concept list is a few hundred characters; more is a runaway generation
RAW_ANSWER_CHARS = 20_000  # what a reject keeps of a bad answer


def _envelope(response: Any) -> tuple[str | None, str, int, int]:
    """(problem or None, content, prompt tokens, completion tokens) from a chat completion, checking the types a
    misbehaving server may get wrong (the SDK does not validate them)."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        return "no choices list in the answer", "", 0, 0
    content = choices[0].message.content if choices and getattr(choices[0], "message", None) is not None else None
    if content is not None and not isinstance(content, str):
        return f"message content is {type(content).__name__}, expected a string", "", 0, 0
    usage = getattr(response, "usage", None)
    tokens = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(usage, name, 0) if usage is not None else 0
        value = 0 if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"usage.{name} is {repr(value)[:40]}, expected a count", "", 0, 0
        tokens.append(value)
    return None, content or "", tokens[0], tokens[1]


def _raw_json(response: Any) -> str:
    import warnings

    try:
        with warnings.catch_warnings():  # the SDK warns about exactly the wrong types being recorded here
            warnings.simplefilter("ignore")
            return response.model_dump_json()
    except Exception:  # a response object too broken to serialise: its repr is the evidence
        return repr(response)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A rough prompt token count (4 characters a token) for rate limits and cost ceilings."""
    return sum(len(m.get("content", "")) for m in messages) // 4 + 8 * len(messages)


class RateLimiter:
    """Client-side requests-per-minute and tokens-per-minute limits (token buckets, refilled continuously)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._requests = requests_per_minute or 0.0
        self._tokens = tokens_per_minute or 0.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._stamp = now - self._stamp, now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        if not (self.rpm or self.tpm):
            return
        async with self._lock:
            while True:
                self._refill()
                waits = []
                if self.rpm and self._requests < 1:
                    waits.append((1 - self._requests) * 60 / self.rpm)
                if self.tpm:
                    need = min(tokens, self.tpm)  # a request larger than the bucket waits for a full bucket
                    if self._tokens < need:
                        waits.append((need - self._tokens) * 60 / self.tpm)
                if not waits:
                    break
                await asyncio.sleep(max(waits))
            if self.rpm:
                self._requests -= 1
            if self.tpm:
                self._tokens -= min(tokens, self.tpm)


class ChatClient:
    """Async chat completions with bounded concurrency, caching and retries; see the module docstring."""

    def __init__(self, settings: ClientSettings) -> None:
        import openai

        self.settings = settings
        api_key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        if settings.api_key_env and not api_key:
            raise ValueError(f"environment variable {settings.api_key_env} (the LLM API key) is not set")
        self._openai = openai
        self._api_key = api_key or "not-needed"
        self._client = None  # an AsyncOpenAI bound to the running event loop, made in run_many
        self.cache = LLMCache(settings.cache_path) if settings.cache_path else None
        self.spent = 0.0  # USD estimated from usage, this client's calls only
        self._limiter: RateLimiter | None = None
        self._primed: str | None = None  # digest of the prefix the server's slots were last primed with
        self._mode_index = 0  # falls back json_schema -> json_object -> text when a server refuses a mode
        self.accept: Callable[[str, dict | None], bool] | None = None  # which answers may be cached (those that parse)

    def key_for(self, messages: Sequence[dict[str, str]], sample: int) -> str:
        return request_key(self.settings.model, messages, self.settings.sampling_params(sample))

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        mode = RESPONSE_MODES[self._mode_index]
        if schema is None or mode == "text":
            return None
        if mode == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": "concepts", "schema": schema, "strict": True}}

    def _max_tokens(self, schema: dict[str, Any] | None) -> int:
        """``max_tokens`` for one answer: per concept list, so a batched request (a schema keyed by several class
        names, prompts.batch_schema) gets that many times the budget of one class."""
        return self.settings.max_tokens * max(1, len(batched_classes(schema)))

    async def _call(self, messages: Sequence[dict[str, str]], schema: dict[str, Any] | None, sample: int):
        params = self.settings.sampling_params(sample)
        params.pop("sample")
        params["max_tokens"] = self._max_tokens(schema)
        kwargs: dict[str, Any] = dict(model=self.settings.model, messages=list(messages), **params)
        response_format = self._response_format(schema)
        if response_format is not None:
            kwargs["response_format"] = response_format
        return await self._client.chat.completions.create(**kwargs)

    async def complete(
        self, messages: Sequence[dict[str, str]], *, schema: dict[str, Any] | None = None, sample: int = 0
    ) -> LLMResult:
        key = self.key_for(messages, sample)
        if self.cache is not None and not self.settings.refresh_cache:
            hit = self.cache.get(key)
            if hit is not None:
                return LLMResult(key=key, cached=True, **hit)
        errors = self._openai
        result = LLMResult(key=key)
        estimate = estimate_tokens(messages)
        if self.settings.max_cost is not None:
            worst = self.spent + self.settings.cost(estimate, self._max_tokens(schema))
            if worst > self.settings.max_cost:
                result.error = "budget_exceeded"
                result.detail = f"estimated spend {worst:.4f} USD would exceed max_cost {self.settings.max_cost} USD"
                return result
        started = time.perf_counter()
        attempt = 0
        while True:
            if self._limiter is not None:
                await self._limiter.acquire(estimate + self._max_tokens(schema))
            try:
                # The whole request, not each read: a server that drips one byte a second never times out a read.
                response = await asyncio.wait_for(self._call(messages, schema, sample), self.settings.timeout_s)
            except asyncio.TimeoutError:
                if attempt >= self.settings.max_retries:
                    result.error, result.detail = "timeout", f"no complete answer within {self.settings.timeout_s} s"
                    break
                attempt += 1
                result.retries = attempt
                await asyncio.sleep(min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt))
                continue
            except errors.BadRequestError as exc:
                # A server that does not know a response_format mode answers 400: fall back to the next mode.
                text = str(exc).lower()
                if self._mode_index < len(RESPONSE_MODES) - 1 and ("response_format" in text or "schema" in text):
                    self._mode_index += 1
                    logger.info("endpoint refused a response format; falling back to %s", RESPONSE_MODES[self._mode_index])
                    continue
                result.error, result.status, result.detail = "http_400", 400, _short(exc)
                break
            except (errors.RateLimitError, errors.InternalServerError, errors.APIConnectionError) as exc:
                status = getattr(exc, "status_code", None)
                if attempt >= self.settings.max_retries:
                    kind = "timeout" if isinstance(exc, errors.APITimeoutError) else (
                        f"http_{status}" if status else "connection_error")
                    result.error, result.status, result.detail = kind, status, _short(exc)
                    break
                delay = _retry_after(exc) if status == 429 else None
                if delay is not None:
                    delay = min(max(delay, 0.0), self.settings.max_retry_after_s)
                else:
                    delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt)
                    delay *= 0.5 + random.random()
                attempt += 1
                result.retries = attempt
                await asyncio.sleep(delay)
                continue
            except errors.APIStatusError as exc:
                status = exc.status_code
                if status >= 500 and attempt < self.settings.max_retries:
                    attempt += 1
                    result.retries = attempt
                    await asyncio.sleep(min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt))
                    continue
                result.error, result.status, result.detail = f"http_{status}", status, _short(exc)
                break
            problem, content, prompt_tokens, completion_tokens = _envelope(response)
            if problem is not None:
                # A malformed answer is data: a reject with the raw envelope kept (short), never cached.
                result.error, result.detail = "bad_envelope", problem
                result.content = _short(_raw_json(response), RAW_ANSWER_CHARS)
                break
            if len(content) > MAX_ANSWER_CHARS:
                result.error = "answer_too_long"
                result.detail = f"{len(content)} characters; answers are at most {MAX_ANSWER_CHARS}"
                result.content = content[:RAW_ANSWER_CHARS]
                result.prompt_tokens, result.completion_tokens = prompt_tokens, completion_tokens
                break
            result.content = content
            result.prompt_tokens, result.completion_tokens = prompt_tokens, completion_tokens
            result.response_mode = RESPONSE_MODES[self._mode_index]
            self.spent += self.settings.cost(result.prompt_tokens, result.completion_tokens)
            break
        result.latency_s = time.perf_counter() - started
        # Only answers the caller accepts (``accept``: they parse) are cached, so a rerun asks again for the rest.
        if result.error is None and self.cache is not None and (self.accept is None or self.accept(result.content, schema)):
            self.cache.put(
                key,
                self.settings.model,
                {
                    "content": result.content,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "response_mode": result.response_mode,
                },
            )
        return result

    async def complete_many(
        self, jobs: Sequence[tuple[Sequence[dict[str, str]], dict[str, Any] | None, int]], *,
        on_done: Callable[[LLMResult], None] | None = None,
    ) -> list[LLMResult]:
        """Run ``(messages, schema, sample)`` jobs with at most ``concurrency`` in flight; results in order.
        ``on_done`` is called with each result as it completes (progress)."""
        gate = asyncio.Semaphore(self.settings.concurrency)
        self._limiter = RateLimiter(self.settings.requests_per_minute, self.settings.tokens_per_minute)
        if self.settings.prime_slots > 1:
            await self._prime([job[0] for job in jobs if not self._cached(job[0], job[2])])

        async def one(job):
            async with gate:
                result = await self.complete(job[0], schema=job[1], sample=job[2])
            if on_done is not None:
                on_done(result)
            return result

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    def _cached(self, messages: Sequence[dict[str, str]], sample: int) -> bool:
        return (self.cache is not None and not self.settings.refresh_cache
                and self.cache.get(self.key_for(messages, sample)) is not None)

    async def _prime(self, prompts: list[Sequence[dict[str, str]]]) -> None:
        """Compute the prompts' shared prefixes once and copy them into the server's slots (llama.cpp's ``/slots``
        save and restore), so concurrent requests do not each recompute them: a base prefix in slot 0, copied into
        every slot; then, for each group of prompts that share more (the same question asked of different classes,
        ``prefix_groups``), its longer prefix in a share of the slots proportional to its size (computed on top of
        the copy, so only its own part is new). The base is the prefix all prompts share, or the largest group's
        when every prompt belongs to a group (one primer fewer). The server sends each request to the idle slot
        whose state matches it best. Skipped, with a log line, when fewer than two prompts share at
        least ``_MIN_PRIME_CHARS`` or the server refuses."""
        common = shared_prefix(prompts) if len(prompts) > 1 else None
        if common is None or _chars(common) < _MIN_PRIME_CHARS:
            return
        slots = self.settings.prime_slots
        groups = prefix_groups(prompts, common)
        plan = [(common, list(range(slots)))] + _allocate(groups, slots)
        if len(plan) > 1 and sum(size for _, size in groups) == len(prompts):
            # every prompt is in a group: the first group's prefix is the base copied into every slot
            plan = [(plan[1][0], list(range(slots)))] + plan[2:]
        digest = hashlib.sha256(json.dumps([p for p, _ in plan], sort_keys=True).encode()).hexdigest()[:16]
        if digest == self._primed:
            return  # the slots already start with these: every request since began with them
        import httpx

        started = time.perf_counter()
        root = self.settings.base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx.AsyncClient(base_url=root, timeout=30.0) as http:
                for number, (prefix, targets) in enumerate(plan):
                    name = f"conceptkit-prefix-{digest}-{number}.bin"
                    await asyncio.wait_for(self._client.chat.completions.create(
                        model=self.settings.model, messages=list(prefix), max_tokens=1, temperature=0.0,
                        extra_body={"id_slot": targets[0]}), self.settings.timeout_s)
                    (await http.post(f"/slots/{targets[0]}", params={"action": "save"},
                                     json={"filename": name})).raise_for_status()
                    for slot in targets[1:]:
                        (await http.post(f"/slots/{slot}", params={"action": "restore"},
                                         json={"filename": name})).raise_for_status()
        except Exception as exc:  # an optimisation only: any server that cannot do it just answers the requests
            logger.info("shared prompt prefix not copied into the server's slots (%s); requests proceed without",
                        _short(exc, 160))
            self._primed = None
            return
        self._primed = digest
        logger.info("copied a shared prompt prefix (%d characters) into %d server slots%s in %.1f s", _chars(plan[0][0]),
                    slots, f", and {len(plan) - 1} more (one per question) into shares of them"
                    if len(plan) > 1 else "", time.perf_counter() - started)

    def run_many(self, jobs, *, on_done: Callable[[LLMResult], None] | None = None) -> list[LLMResult]:
        async def main():
            from conceptkit.pipelines.generation.endpoint import split_endpoint

            # Credentials in the URL (user:pass@, ?token=) go where HTTP expects them, not into the path.
            base_url, query, auth = split_endpoint(self.settings.base_url)
            headers = {"Authorization": auth} if auth and not self.settings.api_key_env else None
            self._client = self._openai.AsyncOpenAI(
                base_url=base_url, api_key=self._api_key, max_retries=0, timeout=self.settings.timeout_s,
                default_query=query or None, default_headers=headers,
            )
            try:
                return await self.complete_many(jobs, on_done=on_done)
            finally:
                await self._client.close()
                self._client = None

        return asyncio.run(main())


_MIN_PRIME_CHARS = 200  # ~50 tokens: below that, priming costs about what it saves
_MIN_GROUP_EXTRA_CHARS = 40  # a group's prefix is worth its own slots when it adds ~10 tokens to the common one


def _chars(messages: Sequence[dict[str, str]]) -> int:
    return sum(len(m.get("content", "")) for m in messages)


def _flat(prompt: Sequence[dict[str, str]]) -> str:
    return "".join(f"\x00{m.get('role', '')}\x01{m.get('content', '')}" for m in prompt)


def prefix_groups(prompts: Sequence[Sequence[dict[str, str]]], common: Sequence[dict[str, str]]
                  ) -> list[tuple[list[dict[str, str]], int]]:
    """Groups of at least two prompts whose shared prefix is at least ``_MIN_GROUP_EXTRA_CHARS`` longer than
    ``common`` (the prefix of all): (the group's prefix, its size), largest first. Prompts sorted by their text,
    neighbours sharing that much more fall into one group."""
    flat = [_flat(p) for p in prompts]
    order = sorted(range(len(prompts)), key=flat.__getitem__)
    need = len(_flat(common)) + _MIN_GROUP_EXTRA_CHARS
    runs, run = [], [order[0]] if order else []
    for a, b in zip(order, order[1:]):
        if len(os.path.commonprefix([flat[a], flat[b]])) >= need:
            run.append(b)
        else:
            runs.append(run)
            run = [b]
    runs.append(run)
    groups = []
    for members in runs:
        if len(members) > 1:  # neighbours share at least `need` characters
            prefix = shared_prefix([prompts[i] for i in members])
            if prefix is not None and _chars(prefix) >= _chars(common) + _MIN_GROUP_EXTRA_CHARS:
                groups.append((prefix, len(members)))
    return sorted(groups, key=lambda g: -g[1])


def _allocate(groups: list[tuple[list[dict[str, str]], int]], slots: int) -> list[tuple[list[dict[str, str]], list[int]]]:
    """Slots for each group's prefix, in proportion to its size (at least one each; the largest groups first
    when there are more groups than slots); every slot in one group's share at most."""
    groups = groups[:slots]
    total = sum(size for _, size in groups)
    if not groups or slots < 2:
        return []
    shares = [max(1, slots * size // total) for _, size in groups]
    for i in range(slots - sum(shares)):  # hand out what rounding left, to the largest groups first
        shares[i % len(shares)] += 1
    while sum(shares) > slots:  # more groups than slots could fill: the smallest give theirs back
        shares[max(i for i, s in enumerate(shares) if s > 0)] -= 1
    out, first = [], 0
    for (prefix, _), share in zip(groups, shares):
        if share:
            out.append((prefix, list(range(first, first + share))))
            first += share
    return out


def shared_prefix(prompts: Sequence[Sequence[dict[str, str]]]) -> list[dict[str, str]] | None:
    """The chat messages every prompt starts with: whole equal messages, then the common start (cut at a space,
    so the tokens up to it match) of the first message that differs, when all have one of the same role."""
    first = prompts[0]
    n = 0
    while n < len(first) and all(len(p) > n and p[n] == first[n] for p in prompts):
        n += 1
    prefix = [dict(m) for m in first[:n]]
    if all(len(p) > n for p in prompts) and len({p[n].get("role") for p in prompts}) == 1:
        common = os.path.commonprefix([p[n].get("content", "") for p in prompts])
        common = common[: common.rfind(" ")] if " " in common else ""
        if common.strip():
            prefix.append({"role": first[n]["role"], "content": common})
    return prefix or None


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_endpoint(base_url: str, *, timeout_s: float = 10.0) -> None:
    """Raise ``ConnectionError`` with a one-line message when nothing answers HTTP at ``base_url``."""
    import urllib.error
    import urllib.request

    from urllib.parse import urlencode

    from conceptkit.pipelines.generation.endpoint import public_url, split_endpoint

    clean, query, auth = split_endpoint(base_url)
    url = clean.rstrip("/") + "/models" + (f"?{urlencode(query)}" if query else "")
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answers HTTP (401/404 are fine here: the endpoint exists)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = " ".join(str(getattr(exc, "reason", exc)).split())[:200]
        raise ConnectionError(f"LLM endpoint {public_url(base_url)} is unreachable: {reason}") from None
