"""Generation engines: our Generator behind LocalEngine, and the OpenAI-compatible HTTP client."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from helpers import small_config
from mobilellm_r1.deploy.generate import Generator
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.eval.engines import GenRequest, LocalEngine, OpenAIEngine
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
    results = LocalEngine(model, tokenizer, batch_size=3).generate(requests, params, progress=done.append)
    assert sum(done) == len(requests)
    gen = Generator(model, tokenizer)
    for req, res in zip(requests, results, strict=True):
        ids = LocalEngine(model, tokenizer).encode(req)
        alone = gen.generate([ids], params)[0][0].text
        assert res.texts == [alone]
        assert res.seconds > 0
    chat_ids = LocalEngine(model, tokenizer).encode(requests[-1])
    assert chat_ids == tokenizer.apply_chat_template(requests[-1].messages, add_generation_prompt=True)


def test_local_engine_n_samples_and_context_clip(model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=10_000, temperature=1.0, n=3, seed=1)
    (res,) = LocalEngine(model, tokenizer).generate([GenRequest("a", prompt="Hello")], params)
    assert len(res.texts) == 3 and len(res.finish_reasons) == 3  # clipped to the 256-token context
    long = GenRequest("b", prompt="word " * 400)
    with pytest.raises(ValueError, match=r"request b: prompt of .* fills the 256-token context"):
        LocalEngine(model, tokenizer).generate([long], SamplingParams(max_new_tokens=4))


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


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.calls = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


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
