"""benchmarks/ondevice_cpu.py: our engine's route steps the model the way `Generator` decodes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ondevice_cpu
from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.tokenizer import load_tokenizer


def test_torch_runtime_grows_a_sequence_like_the_generator(tmp_path, monkeypatch) -> None:
    """Prefill in two chunks (the second attends to the cache), then greedy steps: the same
    tokens as the Generator's greedy decode of the same prompt (float32)."""
    save_pretrained(build_model(preset("tiny"), seed=0), load_tokenizer(), tmp_path / "m")
    prompt = ondevice_cpu.random_ids(300, 0)
    monkeypatch.setattr(ondevice_cpu, "PREFILL_CHUNK", 64)  # the 200-token chunk goes in 4 pieces
    runtime = ondevice_cpu.TorchRuntime(tmp_path / "m", 512, dtype="float32")
    runtime.forward(prompt[:200], 0)
    logits = runtime.forward(prompt[200:], 200)
    steps = []
    for pos in range(300, 316):
        steps.append(int(logits.argmax()))
        logits = runtime.forward([steps[-1]], pos)
    gen = Generator(runtime.model)
    expected = gen.generate([prompt], SamplingParams(max_new_tokens=16, stop_token_ids=()))[0]
    assert steps == list(expected[0].token_ids)


def test_grow_times_every_context(tmp_path) -> None:
    save_pretrained(build_model(preset("tiny"), seed=0), load_tokenizer(), tmp_path / "m")
    out = ondevice_cpu.run_torch_route(tmp_path / "m", [128, 256], decode=4, threads=1)
    assert set(out["decode_tok_s"]) == {128, 256} and all(v > 0 for v in out["decode_tok_s"].values())
    assert out["prefill_tokens"] == 124 and out["prefill_tok_s"] > 0
