"""A loopback fake OpenAI-compatible server: real HTTP, scripted answers and faults.

``FakeLLM(answers={...})`` serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 on a free
port. The answer for a request is chosen by the class name quoted in the user message (``answers[class]``, a list
of concepts, returned as ``{"concepts": [...]}``; for a contrastive question about class A against B,
``answers["A vs B"]`` when given), else generic words; a batched question (several class names listed) gets one
object keyed by every listed class name but those in ``skip_classes``. ``faults`` is a list consumed one per
request before normal answers: ``"429"`` (with Retry-After), ``"500"``, ``"503"``, ``"400"``, ``"hang"`` (sleeps
past the client's timeout), ``"reset"`` (closes the connection), ``"malformed"``, ``"empty"``, ``"schema"``
(JSON of the wrong shape), ``"repeat"`` (one concept repeated many times), ``"401"``, ``"429:SECONDS"`` (a 429
with that Retry-After), ``"drip"`` (headers, then the body one byte per second), ``"bad_content"`` (content 123),
``"bad_usage"`` (``prompt_tokens: "lots"``), ``"huge"`` (a 20 MB answer), ``"many"`` (20,000 concepts).
``latency_s`` delays every answer. ``POST /slots/N?action=save|restore`` (llama.cpp's slot API) answers as llama.cpp
does, or with ``slots_status`` when set (501: a server without a slot directory); recorded in ``slot_calls``.
Counts: ``requests`` (all completions), ``completions`` (successful answers).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CLASS = re.compile(r'Class name \(data, not instructions\): (".*?")\n')
_VERSUS = re.compile(r'apart from items of class (".*?")')
_LISTED = re.compile(r'^\d+\. (".*")$', re.MULTILINE)
GENERIC = ["distinctive detail", "typical setting", "common object", "usual activity", "key vocabulary",
           "frequent phrase", "characteristic tone", "related entity"]


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) resets bursts of new connections from a concurrent client.
    request_queue_size = 1024


class FakeLLM:
    def __init__(
        self,
        answers: dict[str, list[str]] | None = None,
        *,
        faults: list[str] | None = None,
        latency_s: float = 0.0,
        hang_s: float = 5.0,
        refuse_json_schema: bool = False,
        model: str = "fake-model",
        slots_status: int | None = None,
        skip_classes: tuple[str, ...] = (),
    ) -> None:
        self.skip_classes = skip_classes  # batched answers leave these classes out
        self.slots_status = slots_status
        self.slot_calls: list[tuple[int, str, str]] = []  # (slot, action, filename)
        self.answers = answers or {}
        self.faults = list(faults or [])
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.refuse_json_schema = refuse_json_schema
        self.model = model
        self.requests = 0
        self.completions = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []  # request paths with their query strings
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            return self.faults.pop(0) if self.faults else None

    def answer_for(self, body: dict[str, Any]) -> str:
        last = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        if "Class names (data, not instructions):" in last:  # a batched question: one list per class, keyed
            names = [json.loads(m.group(1)) for m in _LISTED.finditer(last.split("Class names (data, not instructions):")[1])]
            return json.dumps({name: self.answers.get(name, GENERIC) for name in names if name not in self.skip_classes})
        user = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
        match = _CLASS.search(user)
        name = json.loads(match.group(1)) if match else ""
        versus = _VERSUS.search(user)  # a contrastive question: answers["A vs B"] first, when given
        key = f"{name} vs {json.loads(versus.group(1))}" if versus else None
        concepts = self.answers[key] if key in self.answers else self.answers.get(name, GENERIC)
        return json.dumps({"concepts": concepts})

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict | str, headers: dict[str, str] | None = None) -> None:
                body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                # Headers and body in one write: two small writes cost a delayed-ACK round trip (~40 ms).
                self._headers_buffer.append(b"\r\n")
                self._headers_buffer.append(body)
                self.flush_headers()

            def do_GET(self) -> None:
                with fake._lock:
                    fake.paths.append(self.path)
                if self.path.split("?")[0].rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.paths.append(self.path)
                if self.path.startswith("/slots/"):
                    slot, _, query = self.path.removeprefix("/slots/").partition("?action=")
                    with fake._lock:
                        fake.slot_calls.append((int(slot), query, body.get("filename", "")))
                    if fake.slots_status:
                        self._send(fake.slots_status, {"error": {"message": "slot save path not set", "type": "fault"}})
                    else:
                        self._send(200, {"id_slot": int(slot), "filename": body.get("filename", "")})
                    return
                with fake._lock:
                    fake.bodies.append(body)
                    fake.headers.append(dict(self.headers))
                fault = fake._next_fault()
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                if fault == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.connection.close()
                    return
                if fault == "hang":
                    time.sleep(fake.hang_s)
                    return
                if fault in ("429", "500", "503", "400", "401") or (fault or "").startswith("429:"):
                    status, _, wait = fault.partition(":")
                    headers = {"Retry-After": wait or "0.05"} if status == "429" else None
                    self._send(int(status), {"error": {"message": f"scripted {fault}", "type": "fault"}}, headers)
                    return
                if fault == "drip":
                    payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    try:
                        for ch in payload:
                            self.wfile.write(ch.encode())
                            self.wfile.flush()
                            time.sleep(1.0)
                    except OSError:
                        pass
                    return
                rf = body.get("response_format") or {}
                if fake.refuse_json_schema and rf.get("type") == "json_schema":
                    self._send(400, {"error": {"message": "response_format json_schema is not supported"}})
                    return
                content = {
                    "malformed": '{"concepts": ["unterminated',
                    "empty": "",
                    "schema": json.dumps({"ideas": ["a", "b"]}),
                    "repeat": json.dumps({"concepts": ["loop item"] * 40}),
                    "huge": json.dumps({"concepts": ["x" * (20 << 20)]}),
                    "many": json.dumps({"concepts": [f"c{i}" for i in range(20_000)]}),
                }.get(fault) if fault else None
                if content is None:
                    content = fake.answer_for(body)
                with fake._lock:
                    fake.completions += 1
                usage = {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}
                if fault == "bad_content":
                    content = 123
                if fault == "bad_usage":
                    usage["prompt_tokens"] = "lots"
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{fake.requests}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": fake.model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": usage,
                    },
                )

        return Handler
