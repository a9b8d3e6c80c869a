"""Generation engines: our Generator behind LocalEngine, and the OpenAI-compatible HTTP client."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from helpers import small_config
from mobilellm_r1.deploy.generate import Generator
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.eval.engines import GenRequest, LocalEngine, OpenAIEngine, ServerError
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import chat_messages, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = small_config(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id, eos_token_id=[])
    return build_model(cfg, seed=0).eval()


def test_request_needs_exactly_one_form() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenRequest("x")
    with pytest.raises(ValueError, match="exactly one"):
        GenRequest("x", prompt="a", messages=[{"role": "user", "content": "a"}])


def test_local_engine_matches_generator_one_by_one(model, tokenizer) -> None:
    """Batched, length-sorted generation returns each request's own greedy completion, in order."""
    prompts = ["One two three", "A much longer prompt about the capital of France and its history", "Hi"]
    requests = [GenRequest(str(i), prompt=p) for i, p in enumerate(prompts)]
    requests.append(GenRequest("chat", messages=chat_messages("What is 2+2?", system="math")))
    params = SamplingParams(max_new_tokens=6)
    done = []
    results = LocalEngine.for_model(model, tokenizer, batch_size=3).generate(
        requests, params, progress=done.append
    )
    assert sum(done) == len(requests)
    gen = Generator(model, tokenizer)
    for req, res in zip(requests, results, strict=True):
        ids = LocalEngine.for_model(model, tokenizer).encode(req)
        alone = gen.generate([ids], params)[0][0].text
        assert res.texts == [alone]
        assert res.seconds > 0
    chat_ids = LocalEngine.for_model(model, tokenizer).encode(requests[-1])
    assert chat_ids == tokenizer.apply_chat_template(requests[-1].messages, add_generation_prompt=True)


def test_local_engine_n_samples_and_context_clip(model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=10_000, temperature=1.0, n=3, seed=1)
    (res,) = LocalEngine.for_model(model, tokenizer).generate([GenRequest("a", prompt="Hello")], params)
    assert len(res.texts) == 3 and len(res.finish_reasons) == 3  # clipped to the 256-token context
    long = GenRequest("b", prompt="word " * 400)
    with pytest.raises(ValueError, match=r"request b: prompt of .* fills the 256-token context"):
        LocalEngine.for_model(model, tokenizer).generate([long], SamplingParams(max_new_tokens=4))


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Echoes what it was asked, in the OpenAI response shapes; /fail gives a 400."""

    calls: ClassVar[list] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, body, self.headers.get("Authorization")))
        if body.get("model") == "bad":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "unknown model"}')
            return
        if body.get("model") in HOSTILE:
            HOSTILE[body["model"]](self)
            return
        if self.path.endswith("/chat/completions"):
            text = body["messages"][-1]["content"]
            choices = [
                {"index": i, "message": {"content": f"{text}#{i}"}, "finish_reason": "stop"}
                for i in range(body["n"])
            ]
        else:
            choices = [
                {"index": i, "text": f"{body['prompt']}#{i}", "finish_reason": "length"}
                for i in range(body["n"])
            ]
        data = json.dumps({"choices": choices[::-1]}).encode()  # out of order on purpose
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # where a followed 302 would land
        type(self).calls.append((self.path, None, self.headers.get("Authorization")))
        self.send_response(200)
        self.end_headers()


def _reply(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {"Content-Length": str(len(data))}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _endless(handler: BaseHTTPRequestHandler) -> None:
    """A 200 without Content-Length that keeps sending (up to 64 MB) until the client hangs up."""
    handler.send_response(200)
    handler.end_headers()
    chunk = b" " * 2**16
    try:
        for _ in range(2**10):
            handler.wfile.write(chunk)
            handler.server.sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


HOSTILE = {  # model name -> what the fake server does
    "endless": _endless,
    "declares-10GB": lambda h: _reply(h, 200, b"{}", {"Content-Length": str(10 * 2**30)}),
    "html": lambda h: _reply(h, 200, b"<html>\n<b>Bad gateway</b></html>"),
    "no-choices": lambda h: _reply(h, 200, b'{"object": "error", "message": "overloaded"}'),
    "no-text": lambda h: _reply(h, 200, b'{"choices": [{"index": 0, "finish_reason": "stop"}]}'),
    "crash": lambda h: _reply(h, 500, b"Traceback (most recent call last):\n  boom\nKeyError: 'x'"),
    "moved": lambda h: _reply(h, 302, b"", {"Location": _FakeOpenAI.elsewhere, "Content-Length": "0"}),
}


def _serve() -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    httpd.sent = 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture()
def httpd():
    server = _serve()
    _FakeOpenAI.calls = []
    yield server
    server.shutdown()


@pytest.fixture()
def server(httpd):
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_openai_engine_routes_and_orders(server) -> None:
    engine = OpenAIEngine(server, "m", api_key="k", concurrency=4)
    requests = [GenRequest("p", prompt="raw"), GenRequest("c", messages=[{"role": "user", "content": "q"}])]
    params = SamplingParams(
        max_new_tokens=7, temperature=0.6, top_p=0.95, n=2, seed=3, stop_strings=("\n\n",)
    )
    res = engine.generate(requests, params)
    assert res[0].texts == ["raw#0", "raw#1"] and res[0].finish_reasons == ["length", "length"]
    assert res[1].texts == ["q#0", "q#1"]
    paths = sorted(c[0] for c in _FakeOpenAI.calls)
    assert paths == ["/v1/chat/completions", "/v1/completions"]
    body = next(c[1] for c in _FakeOpenAI.calls if c[0] == "/v1/completions")
    assert body == {
        "model": "m", "n": 2, "max_tokens": 7, "temperature": 0.6, "top_p": 0.95, "seed": 3,
        "stop": ["\n\n"], "prompt": "raw",
    }  # fmt: skip
    assert all(c[2] == "Bearer k" for c in _FakeOpenAI.calls)


def test_openai_engine_client_error_is_clear(server) -> None:
    engine = OpenAIEngine(server, "bad", retries=2)
    with pytest.raises(RuntimeError, match=r"HTTP 400.*unknown model"):
        engine.generate([GenRequest("p", prompt="x")], SamplingParams())
    assert len(_FakeOpenAI.calls) == 1  # 4xx is not retried


def test_openai_engine_unreachable() -> None:
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", retries=0, timeout_s=2)
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:9/v1/completions"):
        engine.generate([GenRequest("p", prompt="x")], SamplingParams())


def test_openai_engine_refuses_a_redirect_to_another_host(server) -> None:
    """urllib followed a 302 to any host (as a GET) and sent the API key along."""
    other = _serve()  # another host: "localhost" is not the 127.0.0.1 of base_url
    _FakeOpenAI.elsewhere = f"http://localhost:{other.server_address[1]}/steal"
    try:
        engine = OpenAIEngine(server, "moved", api_key="sk-secret", retries=2)
        with pytest.raises(ServerError, match=r"^request p: POST .*/v1/completions: HTTP 302 redirect to "):
            engine.generate([GenRequest("p", prompt="x")], SamplingParams())
    finally:
        other.shutdown()
    assert [(c[0], c[2]) for c in _FakeOpenAI.calls] == [("/v1/completions", "Bearer sk-secret")]


@pytest.mark.parametrize("model", ["endless", "declares-10GB"])
def test_openai_engine_caps_the_reply_size(httpd, server, model: str) -> None:
    """urllib read a reply of any size into memory; now reading stops past the cap."""
    engine = OpenAIEngine(server, model, retries=2, max_reply_bytes=10**6)
    with pytest.raises(ServerError, match=r"^request p: POST \S+: reply .*over the 1,000,000-byte cap"):
        engine.generate([GenRequest("p", prompt="x")], SamplingParams())
    assert len(_FakeOpenAI.calls) == 1 and httpd.sent < 2**25  # not retried, and far from all 64 MB read
    assert OpenAIEngine(server, "m").reply_cap(SamplingParams(n=4, max_new_tokens=1000)) == 2**20 + 128_000


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("html", r"reply is not JSON \(Expecting value: line 1 column 1"),
        ("no-choices", r"reply has no 'choices' list$"),
        ("no-text", r"reply choices\[0\] has no 'text'$"),
    ],
)
def test_openai_engine_malformed_reply_is_one_clear_line(server, model: str, message: str) -> None:
    with pytest.raises(ServerError, match=rf"^request p: POST {server}/completions: {message}") as info:
        OpenAIEngine(server, model).generate([GenRequest("p", prompt="x")], SamplingParams())
    assert "\n" not in str(info.value)


def test_openai_engine_server_error_is_retried_then_one_line(server) -> None:
    engine = OpenAIEngine(server, "crash", retries=1)
    with pytest.raises(ServerError, match=r"^request p: POST \S+: HTTP 500: Traceback .* KeyError: 'x'$"):
        engine.generate([GenRequest("p", prompt="x")], SamplingParams())
    assert len(_FakeOpenAI.calls) == 2  # 5xx is retried


def test_local_engine_runs_an_exported_file_runtime_like_the_checkpoint(model, tokenizer):
    """An engine over `FileGenerator` (as for a .pte / .gguf) gives the checkpoint's results."""
    from helpers import TorchRuntime
    from mobilellm_r1.deploy.file_runtime import FileGenerator

    requests = [
        GenRequest("p", prompt="One two"),
        GenRequest("c", messages=[{"role": "user", "content": "Hi"}]),
    ]
    params = SamplingParams(max_new_tokens=6, n=2)
    want = LocalEngine.for_model(model, tokenizer, batch_size=2).generate(requests, params)
    runtime = TorchRuntime(model, tokenizer, model.config.max_position_embeddings)
    got = LocalEngine(FileGenerator(runtime), tokenizer, runtime.max_context).generate(requests, params)
    assert [(r.texts, r.finish_reasons) for r in got] == [(r.texts, r.finish_reasons) for r in want]
