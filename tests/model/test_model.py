"""Transformer forward: packed documents, KV-cache decoding, output shapes, tying, NoPE layers."""

from __future__ import annotations

import pytest
import torch
import transformers

from helpers import VOCAB, small_config
from mobilellm_r1.model import KVCache, ModelConfig, build_model
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.model.model import doc_ids_from_position_ids


def tiny_cfg(**overrides) -> ModelConfig:
    return small_config(**{"num_hidden_layers": 3, "num_attention_heads": 6, **overrides})


def random_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Norm scales away from 1 so that tests notice a misplaced norm weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    m = build_model(tiny_cfg(), seed=0).eval()
    random_norms(m)
    return m


def rand_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_packed_documents_match_separate(model) -> None:
    a, b = rand_ids((1, 11), 1), rand_ids((1, 7), 2)
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(11), torch.arange(7)])[None]
    doc_ids = doc_ids_from_position_ids(positions)
    out = model(packed, positions, doc_ids=doc_ids)
    torch.testing.assert_close(out[:, :11], model(a), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 11:], model(b), atol=1e-5, rtol=0)
    # without doc_ids the second document attends to the first: logits differ
    leaky = model(packed, positions)
    assert (leaky[:, 11:] - model(b)).abs().max() > 1e-3


@torch.no_grad()
def test_packed_batch_of_rows(model) -> None:
    """Two packed rows with different document boundaries in one batch."""
    docs = [rand_ids((1, n), 10 + n) for n in (5, 9, 6, 8)]
    row0 = torch.cat(docs[:2], dim=1)  # 5 + 9
    row1 = torch.cat(docs[2:], dim=1)  # 6 + 8
    pos = torch.stack(
        [torch.cat([torch.arange(5), torch.arange(9)]), torch.cat([torch.arange(6), torch.arange(8)])]
    )
    out = model(torch.cat([row0, row1]), pos, doc_ids=doc_ids_from_position_ids(pos))
    torch.testing.assert_close(out[0:1, :5], model(docs[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0:1, 5:], model(docs[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:2, :6], model(docs[2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:2, 6:], model(docs[3]), atol=1e-5, rtol=0)


def test_doc_ids_from_position_ids() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    expected = torch.tensor([[1, 1, 1, 2, 2, 3, 4, 4], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert torch.equal(doc_ids_from_position_ids(pos), expected)


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 3])
def test_kv_cache_decoding_matches_full_forward(model, batch: int) -> None:
    cfg = model.config
    ids = rand_ids((batch, 20), 3)
    full = model(ids)
    prefill = 8
    cache = KVCache(cfg, batch, 32, dtype=torch.float32)
    out = model(ids[:, :prefill], cache=cache, cache_pos=torch.arange(prefill))
    torch.testing.assert_close(out, full[:, :prefill], atol=1e-5, rtol=0)
    for t in range(prefill, ids.shape[1]):
        step = model(ids[:, t : t + 1], cache=cache, cache_pos=torch.tensor([t]))
        torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=0)
    # chunked continuation (several tokens at once) on a fresh cache
    cache = KVCache(cfg, batch, 32, dtype=torch.float32)
    model(ids[:, :5], cache=cache, cache_pos=torch.arange(5))
    chunk = model(ids[:, 5:12], cache=cache, cache_pos=torch.arange(5, 12))
    torch.testing.assert_close(chunk, full[:, 5:12], atol=1e-5, rtol=0)


@torch.no_grad()
def test_last_only_and_return_hidden_shapes(model) -> None:
    cfg = model.config
    ids = rand_ids((2, 9), 4)
    full = model(ids)
    assert full.shape == (2, 9, VOCAB)
    last = model(ids, last_only=True)
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=0)
    hidden = model(ids, return_hidden=True)
    assert hidden.shape == (2, 9, cfg.hidden_size)
    torch.testing.assert_close(model.lm_head(hidden), full, atol=1e-5, rtol=0)
    hidden_last = model(ids, return_hidden=True, last_only=True)
    assert hidden_last.shape == (2, 1, cfg.hidden_size)
    torch.testing.assert_close(hidden_last, hidden[:, -1:], atol=1e-5, rtol=0)


def test_tied_embeddings() -> None:
    m = build_model(tiny_cfg(), seed=0)
    assert m.lm_head.weight is m.embed_tokens.weight
    assert sum(p.numel() for p in m.parameters()) == m.config.num_params()
    m16 = build_model(tiny_cfg(), seed=0, dtype=torch.bfloat16)
    assert m16.lm_head.weight is m16.embed_tokens.weight
    assert m16.embed_tokens.weight.dtype == torch.bfloat16
    untied = build_model(tiny_cfg(tie_word_embeddings=False), seed=0)
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert sum(p.numel() for p in untied.parameters()) == untied.config.num_params()


def test_build_model_seeded_init() -> None:
    a, b = build_model(tiny_cfg(), seed=5), build_model(tiny_cfg(), seed=5)
    c = build_model(tiny_cfg(), seed=6)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if pa.dim() == 2:
            assert not torch.equal(pa, pc), name
            assert abs(pa.std().item() - 0.1) < 0.02, name
        else:
            assert torch.equal(pa, torch.ones_like(pa)), name  # norms start at 1


# --------------------------------------------------------------- NoPE layers vs transformers
@pytest.mark.parametrize(
    "overrides",
    [
        dict(no_rope_layers=[1, 0, 1]),
        dict(no_rope_layers=[0, 1, 0], attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5),
        dict(no_rope_layers=[1, 1, 0], use_qk_norm=False),
    ],
    ids=["nope", "nope-temperature", "no-qk-norm"],
)
@torch.no_grad()
def test_nope_layers_match_transformers(tmp_path, overrides: dict) -> None:
    cfg = tiny_cfg(**overrides)
    ours = build_model(cfg, seed=1).eval()
    random_norms(ours, seed=1)
    save_pretrained(ours, None, tmp_path / "ckpt")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert list(hf.config.no_rope_layers) == cfg.no_rope_layers
    ids = rand_ids((2, 40), 5)  # 40 >> floor_scale, so temperature tuning changes queries
    diff = (ours(ids) - hf.eval()(ids).logits).abs().max().item()
    assert diff <= 1e-4
    if cfg.attn_temperature_tuning:  # and it matters: switching it off changes the logits
        plain = build_model(tiny_cfg(**{**overrides, "attn_temperature_tuning": False}), seed=1).eval()
        plain.load_state_dict(ours.state_dict())
        assert (plain(ids) - ours(ids)).abs().max() > 1e-3


def test_long_cache_matmul_decode_matches_full_forward(monkeypatch) -> None:
    """The matmul decode path (used on CUDA for long caches) equals the full forward."""
    from mobilellm_r1.deploy import Generator, SamplingParams
    from mobilellm_r1.model import model as model_module

    monkeypatch.setattr(model_module, "DECODE_MATMUL_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(model_module, "DECODE_MATMUL_MIN_SLOTS", 64)
    cfg = ModelConfig(
        hidden_size=64,
        intermediate_size_mlp=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=300,
        max_position_embeddings=1024,
        initializer_range=0.1,
    )
    model = build_model(cfg, seed=1)
    gen = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(0, 300, (90,), generator=gen).tolist(),
        torch.randint(0, 300, (40,), generator=gen).tolist(),
    ]
    out = Generator(model).generate(prompts, SamplingParams(max_new_tokens=12, stop_token_ids=()))
    for prompt, completions in zip(prompts, out, strict=True):
        ids = torch.tensor([prompt])
        for _ in range(12):
            nxt = model(ids)[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        assert ids[0, len(prompt) :].tolist() == completions[0].token_ids
