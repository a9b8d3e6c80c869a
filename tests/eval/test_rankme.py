"""RankMe: exact on equal-singular-value low-rank matrices, near min(N, d) for random ones; model metric."""

from __future__ import annotations

import pytest
import torch

from helpers import small_config
from mobilellm_r1.eval.rankme import embed_texts, rankme, rankme_of_model
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import load_tokenizer


def equal_singular_values(n: int, d: int, r: int, seed: int = 0) -> torch.Tensor:
    """U V^T * 3 with orthonormal U [n, r], V [d, r]: rank r, all singular values 3."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))
    return (3.0 * u @ v.T).float()


@pytest.mark.parametrize("r", [1, 2, 5, 17, 64])
def test_rank_r_with_equal_singular_values(r: int) -> None:
    assert rankme(equal_singular_values(300, 64, r)) == pytest.approx(r, rel=0.01)


def test_random_gaussian_is_near_full_rank() -> None:
    gen = torch.Generator().manual_seed(0)
    assert rankme(torch.randn(4096, 64, generator=gen)) > 0.98 * 64
    assert rankme(torch.randn(1024, 64, generator=gen)) > 0.97 * 64
    square = rankme(torch.randn(64, 64, generator=gen))  # Marchenko-Pastur spread lowers it
    assert 0.7 * 64 < square < 64
    wide = torch.randn(64, 256, generator=gen)
    assert 0.9 * 64 < rankme(wide) <= 64  # capped by N


def test_scale_invariance_and_errors() -> None:
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    assert rankme(x) == pytest.approx(rankme(1000.0 * x), rel=1e-9)
    assert rankme(torch.zeros(5, 3)) == pytest.approx(1.0, abs=1e-4)  # degenerate: no spread
    with pytest.raises(ValueError):
        rankme(torch.zeros(5))


def test_rankme_of_model_mean_pools_hidden_states() -> None:
    tok = load_tokenizer()
    cfg = small_config(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=[])
    model = build_model(cfg, seed=0).train()
    texts = [f"Document number {i} talks about {'cats ' * (i % 7)}and numbers {i * 37}." for i in range(96)]
    batched = embed_texts(model, tok, texts, batch_size=16)
    assert model.training  # mode restored
    assert batched.shape == (96, cfg.hidden_size)
    assert torch.allclose(batched, embed_texts(model, tok, texts, batch_size=1), atol=1e-5)
    with torch.no_grad():  # by hand: mean of the final hidden states, BOS left out
        ids = torch.tensor([tok.encode(texts[5], bos=True)])
        manual = model(ids, return_hidden=True)[0, 1:].mean(dim=0)
    assert torch.allclose(batched[5], manual, atol=1e-5)
    value = rankme_of_model(model, tok, texts, batch_size=32)
    assert value == pytest.approx(rankme(batched), rel=1e-4)
    assert 1.0 < value <= cfg.hidden_size
