"""Tests for batched continuation log-likelihood scoring against a brute-force reference."""

import random

import pytest
import torch

from helpers import small_config
from mobilellm_r1.eval.loglik import (
    continuation_logprobs,
    encode_pair,
    score_multiple_choice,
    score_partial,
)
from mobilellm_r1.model import Transformer, build_model

VOCAB = 300


@pytest.fixture(scope="module")
def model() -> Transformer:
    cfg = small_config(
        hidden_size=32,
        intermediate_size_mlp=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=VOCAB,
        initializer_range=0.2,
    )
    return build_model(cfg, seed=0).eval()


class CharTokenizer:
    """One id per character, except that "ab" merges into a single token (to exercise the fallback)."""

    bos_id = VOCAB - 1

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = [self.bos_id] if bos else []
        i = 0
        while i < len(text):
            if text.startswith("ab", i):
                ids.append(VOCAB - 2)
                i += 2
            else:
                ids.append(ord(text[i]) % (VOCAB - 3) + 1)
                i += 1
        return ids


@torch.inference_mode()
def brute_force(model: Transformer, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Full sequence alone: logits [1, T, V]; sum log-softmax at the continuation positions."""
    seq = torch.tensor([ctx + cont])
    logp = torch.log_softmax(model(seq)[0].float(), dim=-1)  # [T, V]
    total, greedy = 0.0, True
    for j, tok in enumerate(cont):
        pos = len(ctx) - 1 + j
        total += logp[pos, tok].item()
        greedy &= int(logp[pos].argmax()) == tok
    return total, greedy


def random_requests(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [
        (
            [rng.randrange(VOCAB) for _ in range(rng.randint(1, 12))],
            [rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))],
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_matches_brute_force(model: Transformer, batch_size: int) -> None:
    requests = random_requests(11)
    got = continuation_logprobs(model, requests, batch_size=batch_size)
    assert len(got) == len(requests)
    for (lp, greedy), (ctx, cont) in zip(got, requests, strict=True):
        ref_lp, ref_greedy = brute_force(model, ctx, cont)
        assert lp == pytest.approx(ref_lp, abs=1e-5)
        assert greedy == ref_greedy


def test_is_greedy_true_for_greedy_continuation(model: Transformer) -> None:
    ctx = [5, 17, 42]
    seq = list(ctx)
    with torch.inference_mode():
        for _ in range(4):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    requests = [(ctx, seq[len(ctx) :]), (ctx, [*seq[len(ctx) : -1], (seq[-1] + 1) % VOCAB])]
    (_, g1), (_, g2) = continuation_logprobs(model, requests, batch_size=2)
    assert g1 and not g2


def test_rejects_empty(model: Transformer) -> None:
    with pytest.raises(ValueError):
        continuation_logprobs(model, [([], [1])])


def test_encode_pair_split_and_fallback() -> None:
    tok = CharTokenizer()
    ctx, cont = encode_pair(tok, "xy ", "cd")
    assert ctx == tok.encode("xy", bos=True)
    assert cont == tok.encode(" cd")  # trailing space moved to the continuation
    ctx, cont = encode_pair(tok, "xa", "bc")  # "a" + "b" merge across the boundary
    assert ctx == tok.encode("xa", bos=True)
    assert cont == tok.encode("bc")


def test_multiple_choice_picks_brute_force_argmax(model: Transformer) -> None:
    tok = CharTokenizer()
    context = "Question: which? Answer:"
    choices = [" a", " bb", " longer choice", " ab", " zz top"]
    refs = [brute_force(model, *encode_pair(tok, context, c))[0] for c in choices]
    normed = [r / len(c.encode("utf-8")) for r, c in zip(refs, choices, strict=True)]
    pred = max(range(len(refs)), key=refs.__getitem__)
    pred_norm = max(range(len(normed)), key=normed.__getitem__)
    for gold in range(len(choices)):
        out = score_multiple_choice(model, tok, context, choices, gold, batch_size=3)
        assert out["logprobs"] == pytest.approx(refs, abs=1e-5)
        assert out["acc"] == float(gold == pred)
        assert out["acc_norm"] == float(gold == pred_norm)


def test_partial_scoring(model: Transformer) -> None:
    tok = CharTokenizer()
    contexts = ["The cat sat because the cat", "The cat sat because the mat"]
    continuation = " was tired."
    refs = [brute_force(model, *encode_pair(tok, c, continuation))[0] for c in contexts]
    pred = max(range(2), key=refs.__getitem__)
    out = score_partial(model, tok, contexts, continuation, gold=pred)
    assert out["logprobs"] == pytest.approx(refs, abs=1e-5)
    assert out["pred"] == pred and out["acc"] == 1.0
    assert score_partial(model, tok, contexts, continuation, gold=1 - pred)["acc"] == 0.0
