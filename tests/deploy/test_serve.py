"""The OpenAI-compatible server on a small model, through the official `openai` client and raw
HTTP: completions, chat, streaming, n > 1, stop strings, logprobs, usage, errors (4xx in
OpenAI's shape), disconnects and metrics."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch
import uvicorn

from helpers import SHARED_DATA, small_config
from mobilellm_r1.cli import main
from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.serve import Server, build_server
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import save_pretrained

KEY = "test-key"
NAME = "tiny"


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = small_config(
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=[tokenizer.eot_id],
        max_position_embeddings=128,
    )
    return build_model(cfg, seed=5).eval()


@contextlib.contextmanager
def running(built: Server) -> Iterator[str]:
    """Serve `built` on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(built.app, log_level="warning"))
    built.worker.start()
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not http.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http.should_exit = True
        thread.join(timeout=10)
        built.worker.stop()


@pytest.fixture(scope="module")
def server(model, tokenizer) -> Iterator[tuple[Server, str]]:
    built = build_server(model, tokenizer, name=NAME, api_key=KEY, engine_options={"max_batch": 8})
    with running(built) as url:
        yield built, url


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[1] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def greedy_text(
    model, tokenizer, ids: list[int], max_new: int, stops: tuple[str, ...] = ()
) -> tuple[str, str]:
    params = SamplingParams(max_new_tokens=max_new, stop_strings=stops)
    (c,) = Generator(model, tokenizer).generate([ids], params)[0]
    return c.text, c.finish_reason


def test_completion_matches_the_generator_and_counts_usage(client, model, tokenizer):
    out = client.completions.create(model=NAME, prompt="The cat sat", max_tokens=12, temperature=0)
    want = greedy_text(model, tokenizer, tokenizer.encode("The cat sat", bos=True), 12)
    assert (out.choices[0].text, out.choices[0].finish_reason) == want
    assert out.usage.prompt_tokens == len(tokenizer.encode("The cat sat", bos=True))
    assert out.usage.completion_tokens == 12 and out.usage.total_tokens == out.usage.prompt_tokens + 12
    assert out.object == "text_completion" and out.model == NAME


def test_chat_uses_the_chat_template(client, model, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    out = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0)
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    assert (out.choices[0].message.content, out.choices[0].finish_reason) == greedy_text(
        model, tokenizer, ids, 10
    )
    assert out.choices[0].message.role == "assistant" and out.usage.prompt_tokens == len(ids)


def test_streaming_gives_the_same_text_and_ends_with_done(client, server, model, tokenizer):
    chunks = list(
        client.completions.create(model=NAME, prompt="Once upon", max_tokens=16, temperature=0, stream=True)
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == greedy_text(model, tokenizer, tokenizer.encode("Once upon", bos=True), 16)[0]
    assert chunks[-1].choices[0].finish_reason == "length"
    body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": True}
    raw = httpx.post(
        server[1] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    lines = [line for line in raw.text.split("\n") if line]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_n_samples_with_a_seed_and_stop_strings(client, model, tokenizer):
    ids = tokenizer.encode("Numbers", bos=True)
    free = greedy_text(model, tokenizer, ids, 12)[0]
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    out = client.completions.create(
        model=NAME, prompt="Numbers", max_tokens=12, temperature=0, stop=[stop], n=3
    )
    assert [c.text for c in out.choices] == [free[: free.find(stop)]] * 3
    assert {c.finish_reason for c in out.choices} == {"stop"}
    kw = dict(model=NAME, prompt="Numbers", max_tokens=8, temperature=1.0, n=4, seed=11)
    first, again = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert sorted(c.index for c in first.choices) == [0, 1, 2, 3]


def test_logprobs_are_the_model_log_softmax(client, model, tokenizer):
    ids = tokenizer.encode("Hello", bos=True)
    out = client.completions.create(model=NAME, prompt="Hello", max_tokens=1, temperature=0, logprobs=3)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), -1)
    top = logp.topk(3)
    lp = out.choices[0].logprobs
    assert lp.token_logprobs[0] == pytest.approx(float(top.values[0]), abs=1e-4)
    want = {tokenizer.id_to_token(int(i)): float(v) for v, i in zip(top.values, top.indices, strict=True)}
    assert lp.top_logprobs[0] == pytest.approx(want, abs=1e-4)


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server[1] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    reply = httpx.get(server[1] + "/v1/models")
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server[1] + "/health").status_code == 200  # no key needed


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", {"model": "other", "prompt": "x"}, 404, "model"),
        ("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
        ("/v1/completions", {"model": NAME, "prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 100_000}, 400, "max_tokens"),
        ("/v1/completions", {"model": NAME, "prompt": ""}, 400, None),
        ("/v1/completions", {"model": NAME, "prompt": "x", "n": 0}, 400, "n"),
        ("/v1/chat/completions", {"model": NAME, "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": NAME, "messages": [{"role": "wizard", "content": "x"}]},
            400,
            None,
        ),
        ("/v1/chat/completions", {"model": NAME}, 400, "messages"),
    ],
)
def test_bad_requests_are_4xx_in_openai_shape(server, path, body, status, param):
    reply = httpx.post(server[1] + path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param


def test_malformed_json_is_400(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    reply = httpx.post(server[1] + "/v1/completions", content=b"{not json", headers=headers)
    assert reply.status_code == 400 and "error" in reply.json()


def test_a_disconnected_stream_frees_its_slot(server):
    built, url = server
    body = {
        "model": NAME,
        "prompt": "Long story",
        "max_tokens": 120,
        "n": 8,
        "stream": True,
        "temperature": 0,
    }
    before = built.worker.engine.stats.tokens_generated
    with httpx.stream(
        "POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        next(r.iter_lines())  # the first chunk arrived: the request is running
    deadline = time.monotonic() + 20
    while built.worker.engine.has_work() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not built.worker.engine.has_work()
    assert built.worker.engine.stats.tokens_generated - before < 8 * 120  # cut short, not finished
    aborted = 'mobilellm_requests_total{endpoint="completions",status="aborted"} 1.0'
    assert aborted in httpx.get(url + "/metrics").text


def test_models_health_and_metrics(client, server):
    (card,) = client.models.list().data
    assert card.id == NAME
    metrics = httpx.get(server[1] + "/metrics").text
    for name in (
        "mobilellm_requests_total",
        "mobilellm_generation_tokens_total",
        "mobilellm_requests_waiting",
    ):
        assert name in metrics
    assert "mobilellm_time_to_first_token_seconds_count" in metrics


def test_eval_through_the_server_scores_like_the_in_process_engine(tmp_path, tokenizer, monkeypatch):
    """`eval --server` against our server == `eval --model` in process (greedy, chat protocol)."""
    cfg = small_config(
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=[tokenizer.eot_id],
        max_position_embeddings=1024,
    )
    model = build_model(cfg, seed=9).eval()
    save_pretrained(model, tokenizer, tmp_path / "m")
    common = ["--tasks", "gsm8k,mbpp", "--chat", "--limit", "3", "--n", "1", "--temperature", "0"]
    common += ["--max-new-tokens", "12", "--data-dir", str(SHARED_DATA / "eval")]
    assert (
        main(
            ["eval", "--model", str(tmp_path / "m"), "--device", "cpu", "--out", str(tmp_path / "a"), *common]
        )
        == 0
    )
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with running(build_server(model, tokenizer, name=NAME, api_key=KEY)) as url:
        args = [
            "eval",
            "--server",
            url + "/v1",
            "--served-model",
            NAME,
            "--out",
            str(tmp_path / "b"),
            *common,
        ]
        assert main(args) == 0
    for task in ("gsm8k", "mbpp"):
        rows = [
            [
                json.loads(line)["completion"]
                for line in (tmp_path / run / "samples" / f"{task}.jsonl").read_text().splitlines()
            ]
            for run in ("a", "b")
        ]
        assert rows[0] == rows[1] and len(rows[0]) == 3 and any(rows[0])
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("a", "b")]
    for by_task in summaries:  # wall time is the one field allowed to differ
        for metrics in by_task.values():
            metrics.pop("seconds")
    assert summaries[0] == summaries[1]
