"""Generation engines for the evaluation harness.

An engine turns :class:`GenRequest` s (a raw prompt for base models, or chat messages for
post-trained ones) into ``n`` completion texts each:

- :class:`LocalEngine` - on a loaded checkpoint, the continuous-batching engine
  (:class:`~mobilellm_r1.deploy.batching.BatchingEngine`: all requests queued at once, samples
  join and leave the running batch at every step); on an exported ``.pte`` / ``.gguf`` file,
  its runtime (one sample at a time), ``batch_size`` prompts per call.
- :class:`OpenAIEngine` - any OpenAI-compatible HTTP server (vLLM ``vllm serve``, our own
  server): ``/v1/completions`` for raw prompts and ``/v1/chat/completions`` for chats, ``n``
  samples per request, several requests in flight.  No redirects are followed, replies are
  size-capped, and a bad reply is a one-line :class:`ServerError` naming the request.

Scoring a predictions file needs no engine at all (see :mod:`mobilellm_r1.eval.runner`).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import httpx

from ..deploy.sampling import SamplingParams

Messages = list[dict[str, str]]
Progress = Callable[[int], None]  # called with the number of requests just finished


@dataclass
class GenRequest:
    """One prompt: ``prompt`` (raw text, BOS added by the engine) or ``messages`` (chat)."""

    id: str
    prompt: str | None = None
    messages: Messages | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"request {self.id}: give exactly one of prompt / messages")


@dataclass
class GenResult:
    """The ``n`` completion texts of one request and the seconds spent on them (amortised)."""

    texts: list[str]
    seconds: float
    finish_reasons: list[str] = field(default_factory=list)


class Engine(Protocol):
    """Anything that can complete requests."""

    name: str

    def generate(
        self, requests: Sequence[GenRequest], params: SamplingParams, progress: Progress | None = None
    ) -> list[GenResult]: ...


# ------------------------------------------------------------------------------ local
class LocalEngine:
    """A local generator (see module docstring). On a checkpoint it is the continuous-batching
    engine: every request is queued at once and decoded as samples come and go
    (`deploy.batching.BatchingEngine`). Any other generator with `Generator.generate`'s
    interface (an exported file's `FileGenerator`) gets ``batch_size`` prompts per call,
    sorted by length."""

    name = "local"

    def __init__(self, generator: Any, tokenizer: Any, context: int, *, batch_size: int = 16) -> None:
        self.generator, self.tokenizer, self.context = generator, tokenizer, context
        self.batch_size = max(1, batch_size)

    @classmethod
    def for_model(
        cls, model: Any, tokenizer: Any, *, batch_size: int = 16, compile: bool = False
    ) -> LocalEngine:
        """The continuous-batching engine on a loaded `Transformer`."""
        from ..deploy.batching import BatchingEngine

        engine = BatchingEngine(model, tokenizer, compile=compile)
        return cls(engine, tokenizer, model.config.max_position_embeddings, batch_size=batch_size)

    def encode(self, request: GenRequest) -> list[int]:
        """Prompt token ids: BOS + text, or the chat template with the assistant header."""
        if request.messages is not None:
            return list(self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True))
        return self.tokenizer.encode(request.prompt, bos=True)

    def _fit(self, ids: list[int], max_new: int, request_id: str) -> int:
        """max_new_tokens clipped to the model context (an over-long prompt is an error)."""
        room = self.context - len(ids)
        if room < 1:
            raise ValueError(
                f"request {request_id}: prompt of {len(ids)} tokens fills the {self.context}-token context"
            )
        return min(max_new, room)

    def generate(
        self, requests: Sequence[GenRequest], params: SamplingParams, progress: Progress | None = None
    ) -> list[GenResult]:
        from ..deploy.batching import BatchingEngine

        encoded = [self.encode(r) for r in requests]
        fitted = [
            replace(params, max_new_tokens=self._fit(ids, params.max_new_tokens, r.id))
            for ids, r in zip(encoded, requests, strict=True)
        ]
        if isinstance(self.generator, BatchingEngine):
            return self._continuous(encoded, fitted, progress)
        return self._batched(encoded, fitted, progress)

    def _continuous(
        self, encoded: list[list[int]], params: list[SamplingParams], progress: Progress | None
    ) -> list[GenResult]:
        """All requests queued at once; each is done when its last sample finishes."""
        from ..deploy.batching import EngineRequest

        engine = self.generator
        for i, (ids, p) in enumerate(zip(encoded, params, strict=True)):
            engine.add(EngineRequest(str(i), ids, p, prompt_index=i))
        texts = [[""] * p.n for p in params]
        reasons = [[""] * p.n for p in params]
        left = [p.n for p in params]
        start = time.perf_counter()
        while engine.has_work():
            for event in engine.step():
                if event.finish_reason is None:
                    continue
                i = int(event.request_id)
                texts[i][event.sample_index], reasons[i][event.sample_index] = (
                    event.text or "",
                    event.finish_reason,
                )
                left[i] -= 1
                if left[i] == 0 and progress is not None:
                    progress(1)
        per = (time.perf_counter() - start) / max(len(encoded), 1)
        return [GenResult(t, per, r) for t, r in zip(texts, reasons, strict=True)]

    def _batched(
        self, encoded: list[list[int]], params: list[SamplingParams], progress: Progress | None
    ) -> list[GenResult]:
        """`batch_size` prompts per `generate` call, shortest first, each batch with the
        smallest max_new_tokens of its members."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[GenResult | None] = [None] * len(encoded)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            batch_params = min((params[i] for i in idx), key=lambda p: p.max_new_tokens)
            start = time.perf_counter()
            outs = self.generator.generate([encoded[i] for i in idx], batch_params)
            per = (time.perf_counter() - start) / len(idx)
            for i, samples in zip(idx, outs, strict=True):
                results[i] = GenResult(
                    [s.text or "" for s in samples], per, [s.finish_reason for s in samples]
                )
            if progress is not None:
                progress(len(idx))
        return [r for r in results if r is not None]


# ------------------------------------------------------------------------------ HTTP
REPLY_OVERHEAD_BYTES = 2**20  # a reply's JSON beyond its completion texts
REPLY_BYTES_PER_TOKEN = 32  # generous: Llama-3 tokens average ~4 bytes of text


class ServerError(RuntimeError):
    """A failed or malformed server reply; the one-line message names the request and URL."""


class _Retryable(Exception):
    """A transport error or 5xx reply: worth another attempt."""


class OpenAIEngine:
    """An OpenAI-compatible server (``base_url`` like ``http://localhost:8000/v1``), over ``httpx``.

    The client follows no redirect (a 3xx is an error, so the API key only ever goes to
    ``base_url``'s host), asks for uncompressed replies and reads at most ``max_reply_bytes`` of
    each (default: 1 MiB + 32 bytes per requested token, ``n * max_new_tokens``), within
    ``timeout_s`` per attempt.  Connection errors and 5xx replies are retried ``retries`` times;
    a 4xx, a redirect, an oversized or malformed reply raises :class:`ServerError` at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 600.0,
        retries: int = 3,
        max_reply_bytes: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key = model, api_key
        self.concurrency, self.timeout_s, self.retries = max(1, concurrency), timeout_s, retries
        self.max_reply_bytes = max_reply_bytes

    def reply_cap(self, params: SamplingParams) -> int:
        """The most bytes read of a reply to a request with ``params``."""
        if self.max_reply_bytes is not None:
            return self.max_reply_bytes
        return REPLY_OVERHEAD_BYTES + REPLY_BYTES_PER_TOKEN * params.n * params.max_new_tokens

    def _client(self) -> httpx.Client:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        limits = httpx.Limits(max_connections=self.concurrency)
        return httpx.Client(headers=headers, timeout=self.timeout_s, follow_redirects=False, limits=limits)

    def _post(self, client: httpx.Client, path: str, body: dict[str, Any], cap: int, what: str) -> Any:
        """POST JSON and return the decoded reply, retrying transport errors and 5xx."""
        url = self.base_url + path
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            try:
                return json.loads(self._send(client, url, data, cap, what))
            except json.JSONDecodeError as err:
                raise ServerError(f"{what}: POST {url}: reply is not JSON ({err})") from None
            except _Retryable as err:
                if attempt == self.retries:
                    raise ServerError(f"{what}: POST {url}: {err}") from None
            time.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

    def _send(self, client: httpx.Client, url: str, data: bytes, cap: int, what: str) -> bytes:
        """One POST: the reply body of a 2xx; a 5xx or transport error is :class:`_Retryable`."""
        fail = f"{what}: POST {url}"
        try:
            with client.stream("POST", url, content=data) as resp:
                if resp.is_redirect:
                    where = resp.headers.get("location", "?")
                    raise ServerError(f"{fail}: HTTP {resp.status_code} redirect to {where} refused")
                encoding = resp.headers.get("content-encoding", "identity")
                if encoding != "identity":
                    raise ServerError(f"{fail}: compressed reply ({encoding}) refused; asked for identity")
                raw = _read_capped(resp, cap, self.timeout_s, fail)
        except httpx.TransportError as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from None
        if resp.is_success:
            return raw
        detail = f"HTTP {resp.status_code}: {_snippet(raw)}"
        if resp.status_code >= 500:
            raise _Retryable(detail)
        raise ServerError(f"{fail}: {detail}")

    def _body(self, request: GenRequest, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": params.n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.top_k:
            body["top_k"] = params.top_k  # vLLM extension
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop_strings:
            body["stop"] = list(params.stop_strings)
        if request.messages is not None:
            return "/chat/completions", body | {"messages": request.messages}
        return "/completions", body | {"prompt": request.prompt}

    def _one(self, client: httpx.Client, request: GenRequest, params: SamplingParams) -> GenResult:
        path, body = self._body(request, params)
        what = f"request {request.id}"
        start = time.perf_counter()
        reply = self._post(client, path, body, self.reply_cap(params), what)
        fail = f"{what}: POST {self.base_url}{path}: reply"
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list):
            raise ServerError(f"{fail} has no 'choices' list")
        if len(choices) != params.n:
            raise ServerError(f"{fail} has {len(choices)} choices, asked {params.n}")
        field = "message.content" if request.messages is not None else "text"
        picked = {}
        for i, choice in enumerate(choices):
            index, text, reason = _choice(choice, field, f"{fail} choices[{i}]")
            if not 0 <= index < len(choices) or index in picked:
                raise ServerError(f"{fail} choices[{i}].index {index} is out of range or repeated")
            picked[index] = (text, reason)
        texts, reasons = zip(*(picked[i] for i in range(len(choices))), strict=True)
        return GenResult(list(texts), time.perf_counter() - start, list(reasons))

    def generate(
        self, requests: Sequence[GenRequest], params: SamplingParams, progress: Progress | None = None
    ) -> list[GenResult]:
        with self._client() as client, ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, client, r, params) for r in requests]
            results = []
            for fut in futures:
                results.append(fut.result())
                if progress is not None:
                    progress(1)
        return results


def _read_capped(resp: httpx.Response, cap: int, timeout_s: float, fail: str) -> bytes:
    """The raw body of ``resp``: more than ``cap`` bytes is a :class:`ServerError`, a body still
    arriving after ``timeout_s`` (a slow drip under the per-read timeout) is :class:`_Retryable`."""
    deadline = time.monotonic() + timeout_s
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ServerError(f"{fail}: reply of {int(declared):,} bytes is over the {cap:,}-byte cap")
    chunks, size = [], 0
    for chunk in resp.iter_raw():
        size += len(chunk)
        if size > cap:
            raise ServerError(f"{fail}: reply is over the {cap:,}-byte cap; stopped reading")
        if time.monotonic() > deadline:
            raise _Retryable(f"reply still arriving after {timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _snippet(raw: bytes) -> str:
    """The start of an error reply's body, on one line."""
    return textwrap.shorten(raw[:4096].decode(errors="replace"), 300, placeholder=" ...") or "(empty body)"


def _choice(choice: Any, field: str, where: str) -> tuple[int, str, str]:
    """(index, text, finish reason) of one reply choice; ``field`` is ``text`` or ``message.content``."""
    if not isinstance(choice, dict):
        raise ServerError(f"{where} is {type(choice).__name__}, not an object")
    index = choice.get("index", 0)
    value: Any = choice
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ServerError(f"{where} has no '{field}'")
        value = value[key]
    if not isinstance(index, int) or not isinstance(value, (str, type(None))):
        raise ServerError(f"{where}: 'index' must be an integer and '{field}' a string or null")
    return index, value or "", str(choice.get("finish_reason", ""))
