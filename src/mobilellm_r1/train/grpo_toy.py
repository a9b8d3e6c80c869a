"""A tiny verifiable task for GRPO on CPU: "What is a + (7 - a)?" with gold answer 7.

`warm_start` teaches a small model the answer *format* (`\\boxed{d}` with one digit d, then
`<|eot_id|>`; GRPO's reward reads the ``boxed`` protocol strictly) with random digits as labels,
so the policy starts near 10% reward and only the reward can tell it which digit is right: a
rising reward curve is GRPO's doing. Used by the GRPO test and `benchmarks/grpo_tiny_curve.py`.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..model import ModelConfig, build_model
from ..model.hf import save_pretrained
from ..tokenizer import Tokenizer


def sum_prompts(n: int, seed: int = 0) -> list[dict]:
    """`n` chat prompts whose verifiable answer is 7."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.randrange(8)
        content = f"What is {a} + {7 - a}?"
        rows.append({"id": f"s{i}", "messages": [{"role": "user", "content": content}], "answer": "7"})
    return rows


def toy_config(tokenizer: Tokenizer) -> ModelConfig:
    """A 2-layer, 48-wide GQA model over the Llama-3 vocabulary."""
    return ModelConfig(
        hidden_size=48,
        intermediate_size_mlp=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=256,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=list(tokenizer.stop_ids),
    )


def warm_start(
    tokenizer: Tokenizer, rows: list[dict], out_dir: str | Path, *, steps: int = 60, seed: int = 1
) -> Path:
    """Train the format (`\\boxed{d}` with a random digit + `<|eot_id|>` after the generation
    prompt); save to `out_dir`."""
    model = build_model(toy_config(tokenizer), seed=0)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        seqs, masks = [], []
        for r in rng.sample(rows, 16):
            prompt = tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True)
            answer = [*tokenizer.encode(f"\\boxed{{{rng.randrange(10)}}}"), tokenizer.eot_id]
            seqs.append(prompt + answer)
            masks.append([0] * len(prompt) + [1] * len(answer))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])  # [16, width]
        keep = torch.tensor([m + [0] * (width - len(m)) for m in masks])[:, 1:].bool()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits[keep], ids[:, 1:][keep])
        loss.backward()
        opt.step()
        opt.zero_grad()
    save_pretrained(model, tokenizer, out_dir)
    return Path(out_dir)
