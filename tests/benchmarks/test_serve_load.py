"""benchmarks/serve_load.py: its server-sent-event reader, and one small load level end to end
on the tiny preset (the server in process, on loopback)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import serve_load


async def collect(pieces: list[str]) -> list[str]:
    async def text():
        for p in pieces:
            yield p

    return [d async for d in serve_load.sse_data(text())]


def test_sse_data_splits_at_line_ends_only() -> None:
    """Payloads split across pieces, CRLF ends, comments, and a JSON string holding U+2028
    (which str.splitlines would cut) come back whole."""
    payload = json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False)
    stream = ['data: {"x"', ": 1}\r\n\r\n: keep-alive\n", f"data: {payload}\n\n", "data: [DONE]\n\n"]
    got = asyncio.run(collect(stream))
    assert got == ['{"x": 1}', payload, "[DONE]"]
    assert json.loads(got[1])["text"] == "a\u2028b\x85c"


def test_one_level_end_to_end(tmp_path, monkeypatch) -> None:
    out = tmp_path / "serve.json"
    argv = ["serve_load.py", "--device", "cpu", "--preset", "tiny", "--levels", "2", "--max-output", "6"]
    argv += ["--max-prompt", "40", "--requests-per-level", "3", "--decode-steps", "3", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    serve_load.main()
    (level,) = json.loads(out.read_text())["levels"]
    assert level["concurrency"] == 2 and level["requests"] >= 3 and not level["errors"]
    assert level["output_tokens"] > 0 and level["ttft_s"]["p50"] > 0
    # what the engine did in the level: the clients' tokens, and at least their prompts prefilled
    assert level["engine"]["tokens_generated"] == level["output_tokens"]
    assert level["engine"]["prefill_tokens"] >= level["requests"] and level["engine"]["steps"] > 0
