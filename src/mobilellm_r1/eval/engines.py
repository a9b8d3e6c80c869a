"""Generation engines for the evaluation harness.

An engine turns :class:`GenRequest` s (a raw prompt for base models, or chat messages for
post-trained ones) into ``n`` completion texts each:

- :class:`LocalEngine` - our batched KV-cache :class:`~mobilellm_r1.deploy.generate.Generator`
  on a loaded checkpoint. Requests are sorted by prompt length and generated ``batch_size``
  prompts at a time (x ``n`` samples per prompt in the same batch).
- :class:`OpenAIEngine` - any OpenAI-compatible HTTP server (vLLM ``vllm serve``, our own
  server): ``/v1/completions`` for raw prompts and ``/v1/chat/completions`` for chats, ``n``
  samples per request, several requests in flight.

Scoring a predictions file needs no engine at all (see :mod:`mobilellm_r1.eval.runner`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
    """Our :class:`Generator` over a model + tokenizer (see module docstring)."""

    name = "local"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, compile: bool = False) -> None:
        from ..deploy.generate import Generator

        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.context = model.config.max_position_embeddings
        self.generator = Generator(model, tokenizer, compile=compile)

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
        encoded = [self.encode(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        results: list[GenResult | None] = [None] * len(requests)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            # idx is sorted by prompt length: the last prompt is the longest
            max_new = self._fit(encoded[idx[-1]], params.max_new_tokens, requests[idx[-1]].id)
            batch_params = replace(params, max_new_tokens=max_new)
            start = time.perf_counter()
            outs = self.generator.generate([encoded[i] for i in idx], batch_params)
            per = (time.perf_counter() - start) / len(idx)
            for i, samples in zip(idx, outs, strict=True):
                texts = [s.text or "" for s in samples]
                results[i] = GenResult(texts, per, [s.finish_reason for s in samples])
            if progress is not None:
                progress(len(idx))
        return [r for r in results if r is not None]


# ------------------------------------------------------------------------------ HTTP
class OpenAIEngine:
    """An OpenAI-compatible server (``base_url`` like ``http://localhost:8000/v1``)."""

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key = model, api_key
        self.concurrency, self.timeout_s, self.retries = max(1, concurrency), timeout_s, retries

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries on connection errors and 5xx; a 4xx is raised at once."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:500]
                if err.code < 500 or attempt == self.retries:
                    raise RuntimeError(f"{self.base_url}{path}: HTTP {err.code}: {detail}") from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.base_url}{path}: {err}") from err
            time.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

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

    def _one(self, request: GenRequest, params: SamplingParams) -> GenResult:
        path, body = self._body(request, params)
        start = time.perf_counter()
        reply = self._post(path, body)
        choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != params.n:
            raise RuntimeError(
                f"request {request.id}: server returned {len(choices)} choices, asked {params.n}"
            )
        chat = request.messages is not None
        texts = [(c["message"]["content"] if chat else c["text"]) or "" for c in choices]
        reasons = [str(c.get("finish_reason", "")) for c in choices]
        return GenResult(texts, time.perf_counter() - start, reasons)

    def generate(
        self, requests: Sequence[GenRequest], params: SamplingParams, progress: Progress | None = None
    ) -> list[GenResult]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, r, params) for r in requests]
            results = []
            for fut in futures:
                results.append(fut.result())
                if progress is not None:
                    progress(1)
        return results
