"""The OpenAI-compatible HTTP API over the continuous-batching engine (FastAPI + uvicorn).

Routes: `GET /health`, `GET /metrics` (Prometheus), `GET /v1/models`, `POST /v1/completions`,
`POST /v1/chat/completions` (the model's chat template), with `stream: true` as server-sent
events ending in `data: [DONE]`, `n`, `stop`, `max_tokens`, `logprobs`, `seed` and `usage`.
Every error is OpenAI's JSON shape with a 4xx status naming the field (401 for a missing or wrong
API key, 404 for an unknown model); a client that disconnects has its request aborted, which
frees its slot and KV blocks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ...tokenizer import Tokenizer, validate_messages
from ..batching import EngineRequest
from ..sampling import SamplingParams
from ..text_stream import TextStream
from .metrics import ServerMetrics
from .protocol import ChatCompletionRequest, CompletionRequest, error_body
from .worker import EngineWorker, WorkerError

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
DISCONNECT_POLL_S = 0.5


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(self.status, "invalid_request_error")
        if self.status >= 500:
            kind = "server_error"
        return JSONResponse(error_body(self.message, kind, self.param, self.code), status_code=self.status)


@dataclass
class ServedModel:
    """What the API serves: its name, tokenizer, context and default stop ids."""

    name: str
    tokenizer: Tokenizer
    context: int
    eos_token_id: list[int]
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Sample:
    ids: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


class _Run:
    """One request in the engine: its events, per-sample results and timing metrics."""

    def __init__(
        self, worker: EngineWorker, request: EngineRequest, metrics: ServerMetrics, endpoint: str
    ) -> None:
        self.worker, self.request, self.metrics, self.endpoint = worker, request, metrics, endpoint
        self.samples = [_Sample() for _ in range(request.params.n)]
        self.start = time.perf_counter()
        self.first: float | None = None
        self.done = False
        self.queue = worker.submit(request)
        metrics.prompt_tokens.inc(len(request.prompt_ids))

    async def events(self, http: Request | None = None) -> AsyncIterator[Any]:
        """TokenEvents until every sample has finished; aborts the request if the consumer
        stops early (a closed stream) or, when `http` is given, if its client disconnects."""
        try:
            while not self.done:
                try:
                    event = await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if http is not None and await http.is_disconnected():
                        return
                    continue
                if isinstance(event, WorkerError):
                    self.done = True
                    raise ApiError(event.status, event.message)
                self._record(event)
                yield event
        finally:
            if not self.done:
                self.worker.abort(self.request.id)
                self.metrics.requests.labels(self.endpoint, "aborted").inc()

    def _record(self, event: Any) -> None:
        sample = self.samples[event.sample_index]
        sample.ids.extend(event.token_ids)
        sample.logprobs.extend(event.logprobs or [])
        self.metrics.generated_tokens.inc(len(event.token_ids))
        now = time.perf_counter()
        if self.first is None and event.token_ids:
            self.first = now
            self.metrics.ttft.observe(now - self.start)
        if event.finish_reason is not None:
            sample.finish_reason, sample.text = event.finish_reason, event.text or ""
            if all(s.finish_reason is not None for s in self.samples):
                self._finish(now)

    def _finish(self, now: float) -> None:
        self.done = True
        self.metrics.duration.observe(now - self.start)
        tokens = sum(len(s.ids) for s in self.samples)
        if self.first is not None and tokens > len(self.samples):
            self.metrics.tpot.observe((now - self.first) / (tokens - len(self.samples)))
        self.metrics.requests.labels(self.endpoint, "ok").inc()

    def usage(self) -> dict[str, int]:
        prompt, completion = len(self.request.prompt_ids), sum(len(s.ids) for s in self.samples)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# One choice of an endpoint's response: (sample index, text or delta, logprob entries, finish reason).
ChoiceFn = Callable[[int, str, "list[Any] | None", "str | None"], dict[str, Any]]


# ---------------------------------------------------------------------------- request -> engine
def _sampling(
    body: CompletionRequest | ChatCompletionRequest, served: ServedModel, n_prompt: int, limit: int | None
) -> SamplingParams:
    room = served.context - n_prompt
    if room < 1:
        raise ApiError(400, f"the prompt has {n_prompt} tokens; the context is {served.context}", "messages")
    if limit is not None and limit > room:
        raise ApiError(
            400,
            f"max_tokens {limit} + the prompt's {n_prompt} tokens exceed the context of {served.context} tokens",
            "max_tokens",
        )
    top_logprobs = (
        body.logprobs
        if isinstance(body, CompletionRequest)
        else (body.top_logprobs or 0)
        if body.logprobs
        else None
    )
    return SamplingParams(
        max_new_tokens=limit if limit is not None else room,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(body.top_k or 0, 0),
        n=body.n,
        seed=body.seed,
        stop_token_ids=() if body.ignore_eos else tuple(served.eos_token_id),
        stop_strings=body.stop_strings(),
        logprobs=top_logprobs,
    )


def _check_model(body: Any, served: ServedModel) -> None:
    if body.model != served.name:
        raise ApiError(
            404,
            f"the model `{body.model}` does not exist; this server serves `{served.name}`",
            "model",
            "model_not_found",
        )


def _completion_ids(body: CompletionRequest, served: ServedModel) -> list[int]:
    if isinstance(body.prompt, str):
        return served.tokenizer.encode(body.prompt, bos=True)
    bad = [i for i in body.prompt if not 0 <= i < served.tokenizer.vocab_size]
    if bad:
        raise ApiError(400, f"prompt: token id {bad[0]} is outside the vocabulary", "prompt")
    return list(body.prompt)


def _chat_ids(body: ChatCompletionRequest, served: ServedModel) -> list[int]:
    try:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        validate_messages(messages)
        return list(served.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    except ValueError as err:
        raise ApiError(400, str(err), "messages") from None


# ---------------------------------------------------------------------------- engine -> response
def _token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.id_to_token(token_id)


def _completion_logprobs(tokenizer: Tokenizer, entries: list[Any], offset: int = 0) -> dict[str, list]:
    """OpenAI's legacy completions logprobs block for a sample's tokens."""
    tokens = [_token_text(tokenizer, e.token_id) for e in entries]
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{_token_text(tokenizer, i): lp for i, lp in e.top} for e in entries],
        "text_offset": offsets,
    }


def _chat_logprobs(tokenizer: Tokenizer, entries: list[Any]) -> dict[str, list]:
    """OpenAI's chat logprobs block: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def item(token_id: int, logprob: float) -> dict[str, Any]:
        raw = tokenizer.encoding.decode_single_token_bytes(token_id)
        return {"token": _token_text(tokenizer, token_id), "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            item(e.token_id, e.logprob) | {"top_logprobs": [item(i, lp) for i, lp in e.top]} for e in entries
        ]
    }


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class _Api:
    """The route handlers, closed over the worker, the served model and the metrics."""

    def __init__(self, worker: EngineWorker, served: ServedModel, metrics: ServerMetrics) -> None:
        self.worker, self.served, self.metrics = worker, served, metrics

    def _start(self, ids: list[int], params: SamplingParams, endpoint: str, prefix: str) -> _Run:
        request = EngineRequest(f"{prefix}-{uuid.uuid4().hex}", ids, params)
        return _Run(self.worker, request, self.metrics, endpoint)

    def _head(self, run: _Run, kind: str) -> dict[str, Any]:
        return {"id": run.request.id, "object": kind, "created": int(time.time()), "model": self.served.name}

    async def completions(self, body: CompletionRequest, http: Request) -> Response:
        _check_model(body, self.served)
        ids = _completion_ids(body, self.served)
        limit = (
            body.max_tokens
            if body.max_tokens is not None
            else min(DEFAULT_COMPLETION_TOKENS, self.served.context - len(ids))
        )
        run = self._start(ids, _sampling(body, self.served, len(ids), limit), "completions", "cmpl")
        tok = self.served.tokenizer

        def choice(index: int, text: str, logprobs: list[Any] | None, finish: str | None) -> dict[str, Any]:
            scored = logprobs is not None and body.logprobs is not None
            return {
                "index": index,
                "text": text,
                "logprobs": _completion_logprobs(tok, logprobs) if scored else None,
                "finish_reason": finish,
            }

        return await self._respond(run, body, http, "text_completion", choice)

    async def chat(self, body: ChatCompletionRequest, http: Request) -> Response:
        _check_model(body, self.served)
        ids = _chat_ids(body, self.served)
        run = self._start(ids, _sampling(body, self.served, len(ids), body.limit()), "chat", "chatcmpl")
        tok = self.served.tokenizer

        def choice(index: int, text: str, logprobs: list[Any] | None, finish: str | None) -> dict[str, Any]:
            content = {"role": "assistant", "content": text}
            return {
                "index": index,
                **({"delta": {"content": text} if text else {}} if body.stream else {"message": content}),
                "logprobs": _chat_logprobs(tok, logprobs) if logprobs is not None and body.logprobs else None,
                "finish_reason": finish,
            }

        return await self._respond(run, body, http, "chat.completion", choice)

    async def _respond(self, run: _Run, body: Any, http: Request, kind: str, choice: ChoiceFn) -> Response:
        """The whole response (all samples at the end), or server-sent events as tokens arrive;
        `choice(index, text, logprobs, finish_reason)` shapes one choice of the endpoint."""
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _event_stream(self._stream(run, kind, choice, include_usage))
        async for _ in run.events(http):
            pass
        if not run.done:
            return Response(status_code=499)
        choices = [choice(i, s.text, s.logprobs, s.finish_reason) for i, s in enumerate(run.samples)]
        return JSONResponse(self._head(run, kind) | {"choices": choices, "usage": run.usage()})

    async def _stream(
        self, run: _Run, kind: str, choice: ChoiceFn, include_usage: bool
    ) -> AsyncIterator[bytes]:
        texts = self._text_streams(run)
        chat = kind == "chat.completion"
        head = self._head(run, "chat.completion.chunk" if chat else kind)
        for i in range(run.request.params.n if chat else 0):  # chat streams open with the role
            opening = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            yield _sse(head | {"choices": [opening | {"finish_reason": None}]})
        async for event in run.events():
            delta = texts[event.sample_index].push(event.token_ids)
            if event.finish_reason is not None:
                delta += texts[event.sample_index].finish(event.text or "")
            wanted = run.request.params.logprobs is not None and event.logprobs
            if delta or event.finish_reason or wanted:
                entries = event.logprobs if wanted else None
                yield _sse(
                    head | {"choices": [choice(event.sample_index, delta, entries, event.finish_reason)]}
                )
        if include_usage:
            yield _sse(head | {"choices": [], "usage": run.usage()})
        yield _sse("[DONE]")

    def _text_streams(self, run: _Run) -> list[TextStream]:
        params = run.request.params
        stops = list(params.stop_token_ids or ())
        return [TextStream(self.served.tokenizer, stops, params.stop_strings) for _ in range(params.n)]

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.served.name,
            "object": "model",
            "created": self.served.created,
            "owned_by": "mobilellm-r1",
            "max_model_len": self.served.context,
        }
        return {"object": "list", "data": [card]}


def _event_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """The first validation error as (message, param), the param dotted without `body.`."""
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return (f"{param}: {first['msg']}" if param else first["msg"]), param


def create_app(
    worker: EngineWorker, served: ServedModel, metrics: ServerMetrics, api_key: str | None = None
) -> FastAPI:
    """The FastAPI application (the caller starts and stops the worker)."""
    app = FastAPI(title="mobilellm-r1", docs_url=None, redoc_url=None)
    api = _Api(worker, served, metrics)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return ApiError(
                    401, "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key"
                ).response()
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return ApiError(400, message, param).response()

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> JSONResponse:
        return ApiError(404, f"no route {request.method} {request.url.path}").response()

    @app.exception_handler(405)
    async def not_allowed(request: Request, _: Exception) -> JSONResponse:
        return ApiError(405, f"method {request.method} not allowed on {request.url.path}").response()

    def health() -> dict[str, str]:
        return {"status": "ok"}

    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", prometheus, methods=["GET"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", api.chat, methods=["POST"])
    return app
