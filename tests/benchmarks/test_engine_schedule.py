"""benchmarks/engine_schedule.py end to end at toy size: closed-loop clients keep the engine busy,
and a larger prefill chunk admits more of them per step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import engine_schedule


def test_toy_replay_counts_each_step(tmp_path, monkeypatch) -> None:
    out = tmp_path / "schedule.json"
    argv = ["engine_schedule.py", "--clients", "8", "--steps", "12", "--prefill-chunks", "32", "256"]
    argv += ["--max-prompt", "64", "--max-output", "24", "--kv-gib", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    engine_schedule.main()
    small, large = json.loads(out.read_text())["rows"]
    assert (small["prefill_chunk"], large["prefill_chunk"]) == (32, 256)
    assert small["prefill_tokens_per_step"] <= 32  # padding included, a step admits at most the chunk
    assert large["running_per_step"] > small["running_per_step"]
    assert large["tokens_decoded_per_step"] > small["tokens_decoded_per_step"] > 0
