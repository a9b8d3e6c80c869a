"""benchmarks/fp8_loss.py: the spread/gap verdict on made-up curves, and the script end to end
at toy size on CPU (torchao emulates the float8 matmuls)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fp8_loss


def test_verdict_compares_the_fp8_gap_with_the_bf16_seed_spread() -> None:
    args = argparse.Namespace(window=1, skip=0, tail=2, steps=4)
    bf16 = [[3.0, 2.0, 1.0, 1.0], [3.0, 2.2, 1.2, 1.2]]  # seeds 0.2 apart at the end
    near = fp8_loss.compare({"bf16": bf16, "fp8": [[3.0, 2.1, 1.15, 1.15], [3.0, 2.1, 1.15, 1.15]]}, args)
    assert near["verdict"] == "within spread" and abs(near["gap_tail"] - 0.05) < 1e-9
    assert abs(near["spread_tail"] - 0.2) < 1e-9
    far = fp8_loss.compare({"bf16": bf16, "fp8": [[3.0, 2.1, 1.5, 1.5], [3.0, 2.1, 1.5, 1.5]]}, args)
    assert far["verdict"] == "outside spread" and abs(far["gap_tail"] - 0.4) < 1e-9
    assert fp8_loss.smooth([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_toy_run_end_to_end(tmp_path, monkeypatch) -> None:
    out = tmp_path / "fp8.json"
    argv = ["fp8_loss.py", "--device", "cpu", "--preset", "tiny", "--steps", "6", "--seq-len", "32"]
    argv += ["--micro-batch", "2", "--data", "data/synthetic", "--synth-scale", "0.05", "--window", "2"]
    argv += ["--skip", "2", "--tail", "3", "--work", str(tmp_path / "work"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    fp8_loss.main()
    result = json.loads(out.read_text())
    assert [len(c) for c in result["curves"]["bf16"] + result["curves"]["fp8"]] == [6, 6, 6, 6]
    assert result["curves"]["bf16"][0] != result["curves"]["bf16"][1]  # the seeds differ
    for bf16, fp8 in zip(result["curves"]["bf16"], result["curves"]["fp8"], strict=True):
        assert abs(fp8[0] - bf16[0]) < 0.02 * bf16[0]  # one seed: same weights and first batch
    assert result["comparison"]["verdict"] in ("within spread", "outside spread")
    assert out.with_suffix(".png").stat().st_size > 1000
    # run again in the same --work: the finished runs are reused, not retrained
    stamp = (tmp_path / "work" / "none_seed0" / "metrics.jsonl").stat().st_mtime_ns
    fp8_loss.main()
    assert (tmp_path / "work" / "none_seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["curves"] == result["curves"]
    # only the metrics file is needed to reuse a run; a short one (cut off) is trained again
    shutil.rmtree(tmp_path / "work" / "none_seed0" / "final")
    short = tmp_path / "work" / "tensorwise_seed1" / "metrics.jsonl"
    short.write_text("".join(short.read_text().splitlines(keepends=True)[:3]))
    fp8_loss.main()
    assert (tmp_path / "work" / "none_seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert len(fp8_loss.losses(short.parent)) == 6
    assert json.loads(out.read_text())["curves"]["bf16"] == result["curves"]["bf16"]
