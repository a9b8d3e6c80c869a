"""Fused batch-1 decoding (Triton kernels, run by Triton's CPU interpreter; see conftest.py)
against the eager model: logits, cache writes, Generator tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import VOCAB, small_config
from mobilellm_r1.deploy import Generator, SamplingParams, fused_decode
from mobilellm_r1.deploy.fused_decode import STEP_MODES, FusedDecoder, GemvBlocks, available, gemv_blocks
from mobilellm_r1.model import build_model
from mobilellm_r1.model.model import KVCache

# Few programs per launch keep the interpreter fast; K steps of 32 make every product take
# several prefetched steps, and 128-row LM-head blocks leave a partial block (1,000 rows).
BLOCKS = {name: GemvBlocks(16, 32) for name in ("qkv", "o", "gate_up", "down")} | {
    "lm_head": GemvBlocks(128, 64),
    "mlp": GemvBlocks(16, 64, rows=64),  # 160 hidden units: 3 programs' atomic adds, the last partial
}


# the decoder's ways of running a step: 5 kernels per layer, 4 (the MLP as one kernel), or one
# persistent launch for all layers with either's phases (3 programs: every phase has more items
# than programs)
MODES = {
    name: {**opts, "persistent_programs": 3} if "persistent" in opts else opts
    for name, opts in STEP_MODES.items()
}


def gqa_config(**overrides):
    """6 query heads on 2 kv heads (3 per group: not a power of two), NoPE middle layer with
    Llama-4 query temperature tuning."""
    values = dict(
        hidden_size=96,
        intermediate_size_mlp=160,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=32,
        no_rope_layers=[1, 0, 1],
        attn_temperature_tuning=True,
        floor_scale=8,
        attn_scale=0.5,
    )
    return small_config(**{**values, **overrides})


def prefilled(model, ids: torch.Tensor, n: int, max_len: int = 256) -> KVCache:
    cache = KVCache(model.config, 1, max_len, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        model(ids[:, :n], cache=cache, cache_pos=torch.arange(n))
    return cache


@pytest.mark.parametrize(
    ("use_qk_norm", "splits", "mode"),
    [
        (True, None, "five"),  # default: 16 splits of 16-slot tiles, most of them past the position
        (False, 2, "five"),  # two splits, each walking every other tile (online softmax across tiles)
        (True, None, "fuse_mlp"),  # the MLP as one kernel (split-K down product folded in by the next kernel)
        (True, None, "persistent"),  # all layers in one kernel (here: one launch per phase)
        (False, 2, "persistent"),
        (True, None, "persistent_fuse_mlp"),
    ],
)
def test_fused_step_matches_eager(use_qk_norm: bool, splits: int | None, mode: str, monkeypatch) -> None:
    monkeypatch.setattr(fused_decode, "MERGE_SPLITS", 2)  # the attention merge takes several steps
    cfg = gqa_config(use_qk_norm=use_qk_norm)
    model = build_model(cfg, seed=0).eval()
    ids = torch.randint(3, VOCAB, (1, 80), generator=torch.Generator().manual_seed(0))
    ref_cache, fused_cache = prefilled(model, ids, 40), prefilled(model, ids, 40)
    decoder = FusedDecoder(
        model, fused_cache, blocks=BLOCKS, attn_block=16, attn_splits=splits, **MODES[mode]
    )
    assert decoder.n_splits == (splits or 16)
    with torch.no_grad():
        # 3, 3 and 5 tiles below the position; 75: slots 42-74 were never written (zeros in both)
        for p in (40, 41, 75):
            pos = torch.tensor([p])
            ref = model(ids[:, p : p + 1], cache=ref_cache, cache_pos=pos)[:, -1]
            out = decoder(ids[0, p : p + 1], pos)
            assert out.shape == (1, VOCAB)
            torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    for name, buf in ref_cache.named_buffers():
        torch.testing.assert_close(dict(fused_cache.named_buffers())[name], buf, atol=1e-5, rtol=1e-4)
    assert decoder.tickets.eq(0).all()  # every attention launch reset its merge tickets


@pytest.mark.parametrize("mode", list(MODES))
def test_fused_step_half_precision_rounds_like_eager(mode: str) -> None:
    """In 16-bit floats the fused step rounds where the eager model rounds (only the order of
    float32 sums differs): no further from the float32 model than eager is. float16, because
    the interpreter truncates float32 -> bfloat16 where GPUs round to nearest (the bf16
    comparison on an H100 is in benchmarks/diag/fused_decode.py)."""
    cfg = gqa_config()
    model = build_model(cfg, seed=1).eval()
    ids = torch.randint(3, VOCAB, (1, 30), generator=torch.Generator().manual_seed(1))
    model16 = build_model(cfg, seed=1).eval().to(torch.float16)
    pos = torch.tensor([29])
    with torch.no_grad():
        ref32 = model(ids[:, 29:], cache=prefilled(model, ids, 29), cache_pos=pos)[0, -1]
        ref16 = model16(ids[:, 29:], cache=prefilled(model16, ids, 29), cache_pos=pos)[0, -1].float()
        decoder = FusedDecoder(model16, prefilled(model16, ids, 29), blocks=BLOCKS, **MODES[mode])
        out16 = decoder(ids[0, 29:], pos)[0].float()
    eager_err, fused_err = (ref16 - ref32).abs().max(), (out16 - ref32).abs().max()
    assert fused_err <= 1.25 * eager_err, (fused_err, eager_err)
    assert (out16 - ref16).abs().max() <= 0.03 * ref16.abs().max()


@pytest.mark.parametrize("mode", list(MODES))
def test_generator_fused_matches_unfused(mode: str, monkeypatch) -> None:
    # the Generator builds its FusedDecoder with default launch shapes: make them interpreter-sized
    monkeypatch.setattr(fused_decode, "gemv_blocks", lambda name, n, k: GemvBlocks(128, 32))
    model = build_model(gqa_config(), seed=2).eval()
    prompt = torch.randint(3, VOCAB, (12,), generator=torch.Generator().manual_seed(2)).tolist()
    greedy = SamplingParams(max_new_tokens=5, stop_token_ids=())
    sampled = dataclasses.replace(greedy, temperature=1.0, seed=5)
    # the fused runner advances 3 steps per call: 1 + 3 + 3 runs 2 steps past max_new_tokens
    fused_gen = Generator(model, fused=True, sync_every=3, fused_options=MODES[mode])
    for params in (sampled, greedy):
        plain = Generator(model).generate([prompt], params)[0][0].token_ids
        assert fused_gen.generate([prompt], params)[0][0].token_ids == plain
    # a stop token inside a block of steps ends the sample there (plain: the greedy tokens)
    stop = dataclasses.replace(greedy, stop_token_ids=(plain[2],))
    (c,) = fused_gen.generate([prompt], stop)[0]
    (ref,) = Generator(model).generate([prompt], stop)[0]
    assert c.token_ids == ref.token_ids == plain[: plain.index(plain[2]) + 1]
    assert c.finish_reason == ref.finish_reason == "stop"
    # batches of several rows take the unfused step
    two = fused_gen.generate([prompt, prompt[:5]], greedy)
    assert [r[0].token_ids for r in two] == [
        r[0].token_ids for r in Generator(model).generate([prompt, prompt[:5]], greedy)
    ]


def test_generator_raises_when_a_persistent_barrier_timed_out(monkeypatch) -> None:
    """A grid barrier that gave up (flag set by the kernel; here by hand) means wrong tokens:
    the Generator raises at the end of the call instead of returning them."""
    monkeypatch.setattr(fused_decode, "gemv_blocks", lambda name, n, k: GemvBlocks(128, 32))
    model = build_model(gqa_config(), seed=2).eval()
    gen = Generator(model, fused=True, sync_every=3, fused_options=MODES["persistent"])
    greedy = SamplingParams(max_new_tokens=3, stop_token_ids=())
    gen.generate([[5, 6, 7]], greedy)
    (runner,) = gen._steps.values()
    with torch.inference_mode():
        runner.fused.barriers[-1] = 1
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        gen.generate([[5, 6, 7]], greedy)


def test_fused_decoder_rejects_what_it_cannot_run() -> None:
    model = build_model(small_config(), seed=0).eval()
    with pytest.raises(ValueError, match="batch-1"):
        FusedDecoder(model, KVCache(model.config, 2, 64, dtype=torch.float32))
    for head_dim in (12, 16):  # not a power of two; too narrow for tensor-core tiles
        odd = build_model(small_config(head_dim=head_dim, hidden_size=48), seed=0).eval()
        with pytest.raises(ValueError, match="power-of-two head_dim >= 32"):
            FusedDecoder(odd, KVCache(odd.config, 1, 64, dtype=torch.float32))
    gqa = build_model(gqa_config(), seed=0).eval()
    with pytest.raises(ValueError, match="attn_block must be a power of two >= 16"):
        FusedDecoder(gqa, KVCache(gqa.config, 1, 64, dtype=torch.float32), attn_block=24)


def test_persistent_grid_no_larger_than_the_gpu_holds(monkeypatch) -> None:
    """On a GPU the first persistent launch sizes the grid from the compiled kernel (here
    faked: 2 programs fit); asking for more is an error before anything is launched, since
    programs not running would keep the others waiting at the grid barrier."""
    model = build_model(gqa_config(), seed=0).eval()
    cache = KVCache(model.config, 1, 64, dtype=torch.float32)
    dec = FusedDecoder(model, cache, blocks=BLOCKS, persistent=True, persistent_programs=3)
    monkeypatch.setattr(fused_decode, "_interpreting", lambda: False)
    monkeypatch.setattr(dec, "_resident_programs", lambda *args: 2)
    with pytest.raises(ValueError, match="persistent_programs=3: this GPU holds 2 programs"):
        dec(torch.tensor([5]), torch.tensor([0]))


def test_launch_shapes() -> None:
    assert available(torch.device("cpu"))  # the interpreter (conftest) runs the kernels on CPU
    assert gemv_blocks("lm_head", 128256, 1536) == GemvBlocks(4, 512)
    assert gemv_blocks("qkv", 2304, 1536) == GemvBlocks(2, 2048)  # 950m: whole rows
    assert gemv_blocks("qkv", 960, 576) == GemvBlocks(2, 1024)
    assert gemv_blocks("o", 1536, 1536) == GemvBlocks(2, 2048)
    assert gemv_blocks("o", 576, 576) == GemvBlocks(2, 1024)
    assert gemv_blocks("gate_up", 6144, 1536) == GemvBlocks(4, 512)
    assert gemv_blocks("gate_up", 2048, 576) == GemvBlocks(2, 1024)
    assert gemv_blocks("down", 1536, 6144) == GemvBlocks(2, 4096, 8)
    assert gemv_blocks("down", 576, 2048) == GemvBlocks(2, 4096, 8)
    assert gemv_blocks("down", 96, 160) == GemvBlocks(2, 1024)
    # the one-kernel MLP: ~128 programs of whole 4-row chunks (950m 48 units each, 140m 16)
    assert gemv_blocks("mlp", 6144, 1536) == GemvBlocks(4, 512, 8, rows=48)
    assert gemv_blocks("mlp", 2048, 576) == GemvBlocks(4, 512, 8, rows=16)
    # attention: 192 programs in all, no more per kv head than the cache has 16-slot tiles
    assert fused_decode.attention_splits(4352, 6) == 32
    assert fused_decode.attention_splits(4352, 3) == 64
    assert fused_decode.attention_splits(256, 3) == 16


def test_greedy_step_argmax_ties_and_bookkeeping() -> None:
    """The LM head's folded argmax picks the first of equal maxima across and within programs
    (-0.0 equals 0.0, as in torch.argmax); the advance kernel writes the token, flags stop
    tokens, pads finished rows, advances pos/idx and resets the argmax slots."""
    from mobilellm_r1.deploy import decode_kernels as K

    def greedy(y: list[float], stop: list[int], finished: bool) -> tuple[int, bool, list[int]]:
        n = len(y)
        w = torch.tensor(y)[:, None]  # [n, 1] rows; x = [1]: y[i] = w[i]
        logits, best = torch.empty(n), torch.full((K.ARGMAX_SLOTS.value,), -(2**63), dtype=torch.long)
        x = torch.ones(1)
        K.gemv_kernel[(-(-n // 2),)](
            w, x, x, logits, logits, best, n, 1, 1e-5,
            NORM=False, EPILOGUE=K.EPILOGUE_ARGMAX, BLOCK_N=2, BLOCK_K=16, PDL=False, EARLY=False,
        )  # fmt: skip
        tok, pos, idx = torch.tensor([5]), torch.tensor([9]), torch.tensor([2])
        done, out = torch.tensor([finished]), torch.zeros(1, 6, dtype=torch.long)
        stops = torch.tensor(stop, dtype=torch.long)
        K.greedy_advance_kernel[(1,)](
            best, tok, pos, idx, done, stops, out, len(stop), 99, BLOCK_STOP=4, PDL=False
        )
        assert best.eq(-(2**63)).all() and pos.item() == 10 and idx.item() == 3
        assert tok.item() == out[0, 2].item() and out[0, [0, 1, 3, 4, 5]].eq(0).all()
        assert int(torch.tensor(y).argmax()) == tok.item() or finished
        return tok.item(), bool(done.item()), out[0].tolist()

    assert greedy([1.0, 3.0, -2.0, 3.0, 3.0], stop=[], finished=False)[:2] == (1, False)
    assert greedy([-1.0, 2.0, -5.0, 2.0, 0.5], stop=[7, 1], finished=False)[:2] == (1, True)
    assert greedy([-3.0, -0.0, 0.0, -1.0], stop=[], finished=False)[0] == 1
    assert greedy([-3.0, -7.0, -2.5], stop=[], finished=False)[0] == 2
    assert greedy([1.0, 2.0], stop=[99], finished=True)[:2] == (99, True)  # finished: padding


def test_prefetch_ranges() -> None:
    """The MLP bytes an attention kernel prefetches: gate and up rows in equal parts, then down."""
    gate_up, down = torch.zeros(8, 4), torch.zeros(4, 8)  # N = 4 rows per half, 16-byte rows
    (g, ng), (u, nu), (dn, nd) = fused_decode.prefetch_ranges(gate_up, down, 100)
    assert (ng, nu, nd) == (48, 48, 0)  # three rows of each half; no down rows until gate_up is whole
    assert u.data_ptr() - g.data_ptr() == 4 * 16 and dn.data_ptr() == down.data_ptr()
    assert [n for _, n in fused_decode.prefetch_ranges(gate_up, down, 200)] == [64, 64, 72]
    assert [n for _, n in fused_decode.prefetch_ranges(gate_up, down, 10**6)] == [64, 64, 128]
    assert [n for _, n in fused_decode.prefetch_ranges(gate_up, down, 0)] == [0, 0, 0]


def test_default_prefetch_only_for_large_mlps(monkeypatch) -> None:
    model = build_model(gqa_config(), seed=0)
    assert fused_decode.default_prefetch(model) == 0  # a few kB of MLP weights per layer
    monkeypatch.setattr(fused_decode, "PREFETCH_MIN_MLP", 1000)
    assert fused_decode.default_prefetch(model) == fused_decode.PREFETCH_BYTES
