"""Paged decode attention (Triton kernels, run by Triton's CPU interpreter; see conftest.py):
the kernel against the PyTorch reference, the engine's decode steps through it against the
gather path, and the kernels' compilation for Hopper (in a subprocess without the
interpreter, as in test_decode_kernels.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import small_config
from mobilellm_r1.deploy import SamplingParams, paged_attention
from mobilellm_r1.deploy.batching import BatchingEngine, EngineRequest
from mobilellm_r1.deploy.paged_attention import (
    decode_splits,
    paged_decode_attention,
    paged_decode_attention_reference,
)
from mobilellm_r1.model import build_model

BLOCK = 16
# Rows of lengths 1, 16 (exactly one block), 33 and 70 (five blocks); rows 2 and 3 share their
# first two blocks, as the samples of one prompt do; the tables are padded with the null block.
LENGTHS = [1, 16, 33, 70]
TABLES = [[7, 0, 0, 0, 0], [8, 0, 0, 0, 0], [1, 2, 3, 0, 0], [1, 2, 4, 5, 6]]
POOL_BLOCKS = 9
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    # the interpreter truncates float32 to bfloat16 (GPUs round to nearest): a bf16 ulp or two
    torch.bfloat16: dict(atol=1e-2, rtol=1e-2),
}


def case(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, seed: int = 0):
    """q [4, heads, head_dim] (a strided view, as the model's q is) and random pools, every
    block (the null block included) filled, so reading a wrong block changes the result."""
    gen = torch.Generator().manual_seed(seed)
    shape = (POOL_BLOCKS + 1, kv_heads, BLOCK, head_dim)
    k_pool, v_pool = (torch.randn(shape, generator=gen).to(dtype) for _ in range(2))
    qkv = torch.randn(len(LENGTHS), heads + 2 * kv_heads, head_dim, generator=gen).to(dtype)
    tables = torch.tensor(TABLES, dtype=torch.int32)
    return qkv[:, :heads], k_pool, v_pool, tables, torch.tensor(LENGTHS, dtype=torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 32), (8, 2, 64)], ids=["mha", "gqa4"])
def test_kernel_matches_reference(heads, kv_heads, head_dim, dtype, monkeypatch) -> None:
    monkeypatch.setattr(paged_attention, "MERGE_SPLITS", 2)  # the merge takes several steps
    args = case(heads, kv_heads, head_dim, dtype)
    want = paged_decode_attention_reference(*args)
    # default launch (2 splits of 64-token tiles); 2 splits of 16-token tiles, each walking
    # every other tile; 5 splits, more than the short rows have tiles (neutral partials)
    for splits, tile in [(None, None), (2, 16), (5, 16)]:
        out = paged_decode_attention(*args, splits, tile)
        assert out.shape == (4, heads, head_dim) and out.dtype == dtype
        torch.testing.assert_close(out, want, **TOLERANCE[dtype])
    # the reference itself: row 0 (one token) returns that token's value for every head
    v0 = args[2][TABLES[0][0], :, 0].repeat_interleave(heads // kv_heads, dim=0)
    torch.testing.assert_close(want[0], v0)


def test_splits_depend_on_shapes_only() -> None:
    """~1,024 programs per launch, no more splits than a full table has tiles."""
    assert decode_splits(64, 6, 8192) == 3  # the eval workload: 64 samples, 950M's 6 kv heads
    assert decode_splits(256, 6, 8192) == 1
    assert decode_splits(1, 6, 8192) == 128  # MAX_SPLITS
    assert decode_splits(1, 2, 100) == 2  # two 64-token tiles


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(tables=torch.tensor(TABLES)), r"block_tables must be int32 \[4, width\], got torch.int64"),
        (dict(lengths=torch.tensor(LENGTHS[:3], dtype=torch.int32)), r"lengths must be int32 \[4\]"),
        (dict(q=torch.zeros(4, 6, 32)), "q's 6 heads are not a multiple of the pool's 4 kv heads"),
        (dict(q=torch.zeros(4, 4, 24)), r"k_pool .* and v_pool .* must match, with head_dim 24"),
        (dict(v_pool=torch.zeros(10, 4, 32, 16).transpose(2, 3)), "must be contiguous"),
        (dict(q=torch.zeros(4, 4, 32, dtype=torch.bfloat16)), "q is torch.bfloat16 but the pools are"),
    ],
)
def test_bad_arguments_name_the_argument(change, message) -> None:
    q, k_pool, v_pool, tables, lengths = case(4, 4, 32, torch.float32)
    args = dict(q=q, k_pool=k_pool, v_pool=v_pool, tables=tables, lengths=lengths) | change
    with pytest.raises(ValueError, match=message):
        paged_decode_attention(*args.values())


# ------------------------------------------------------------------ the engine's decode steps
SAMPLED = SamplingParams(
    max_new_tokens=12, temperature=0.9, top_k=50, n=3, seed=5, stop_token_ids=(), logprobs=3
)


def record_decode_widths(cache) -> list[int]:
    """Wrap `cache.plan` to record the block-table width of every decode forward."""
    widths, plan = [], cache.plan

    def recording(write_blocks, write_slots, read_blocks, lengths) -> None:
        if write_blocks.shape[1] == 1:  # one token per row
            widths.append(read_blocks.shape[1])
        plan(write_blocks, write_slots, read_blocks, lengths)

    cache.plan = recording
    return widths


def engine_run(model, prompts, paged: bool, compile: bool = False, steps: int = 1):
    """Every sample's (token, logprob, top-3 logprobs) per step, the engine, and the block
    table widths of its decode steps, whose attention takes the paged kernel or not."""
    engine = BatchingEngine(model, block_size=8, compile=compile, decode_steps=steps)
    engine.cache.paged_decode = paged  # the kernel path off CUDA: interpreter tensors
    widths = record_decode_widths(engine.cache)
    for i, p in enumerate(prompts):
        engine.add(EngineRequest(f"r{i}", p, SAMPLED, prompt_index=i))
    steps: dict[tuple[str, int], list] = {}
    while engine.has_work():
        for e in engine.step():
            for lp in e.logprobs or []:
                steps.setdefault((e.request_id, e.sample_index), []).append((lp.token_id, lp.logprob, lp.top))
    return steps, engine, widths


def assert_same_samples(got, want) -> None:
    assert got.keys() == want.keys()
    for key, rows in want.items():
        assert [r[0] for r in got[key]] == [r[0] for r in rows], key  # the same tokens
        for (_, lp, top), (_, lp_ref, top_ref) in zip(got[key], rows, strict=True):
            assert lp == pytest.approx(lp_ref, abs=1e-5)
            assert [t for t, _ in top] == [t for t, _ in top_ref]
            assert [v for _, v in top] == pytest.approx([v for _, v in top_ref], abs=1e-5)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(small_config(), seed=0).eval()


def test_engine_decode_through_the_kernel_matches_the_gather_path(model, monkeypatch) -> None:
    """Two prompts of 21 and 6 tokens, 3 samples each (shared prompt blocks, copied partial
    ones), lengths crossing block boundaries: the same tokens and log-probabilities with the
    decode attention in the paged kernel as with the gathered copy, and the kernel's block
    tables are one fixed width (a full-context sample's blocks)."""
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in (21, 6)]
    want, _, gather_widths = engine_run(model, prompts, paged=False)
    launches = []
    kernel = paged_attention.paged_decode_attention
    monkeypatch.setattr(
        paged_attention, "paged_decode_attention", lambda *a: launches.append(1) or kernel(*a)
    )
    got, engine, widths = engine_run(model, prompts, paged=True)
    assert_same_samples(got, want)
    assert len(launches) == len(widths) * model.config.num_hidden_layers  # every decode step, every layer
    assert len(set(gather_widths)) > 1  # the gather path's tables follow the longest row
    assert set(widths) == {engine.decode_width} and engine.decode_width == 256 // 8
    assert engine.stats.blocks_used == 0


def test_compiled_engine_decode_through_the_kernel() -> None:
    """torch.compile (fullgraph) of the decode step with the kernel's custom op inside, in
    windows of 4 steps: the eager one-step engine's samples."""
    cfg = small_config(hidden_size=32, intermediate_size_mlp=64, num_attention_heads=2, num_key_value_heads=1)
    small = build_model(cfg, seed=0).eval()
    prompts = [[5, 6, 7], list(range(10, 22))]
    want, _, _ = engine_run(small, prompts, paged=True)
    got, _, widths = engine_run(small, prompts, paged=True, compile=True, steps=4)
    assert_same_samples(got, want)
    assert set(widths) == {256 // 8}


def test_warmup_builds_every_rows_bucket() -> None:
    """After `warmup()` a compiled engine with the kernel serves 1..4 rows without compiling
    again (a server's first requests wait for no compile)."""
    from torch._dynamo.utils import counters

    cfg = small_config(hidden_size=32, intermediate_size_mlp=64, num_attention_heads=2, num_key_value_heads=1)
    small = build_model(cfg, seed=0).eval()
    engine = BatchingEngine(small, block_size=8, compile=True, max_batch=4, decode_steps=2)
    engine.cache.paged_decode = True
    before = counters["stats"]["unique_graphs"]
    engine.warmup()
    built = counters["stats"]["unique_graphs"]
    assert built > before
    params = SamplingParams(max_new_tokens=5, stop_token_ids=())
    for i, n in enumerate((3, 9, 4, 12)):  # 1, 2, 3 (bucket 4) and 4 rows in flight
        engine.add(EngineRequest(f"r{i}", list(range(5, 5 + n)), params))
        engine.step()
    while engine.has_work():
        engine.step()
    assert counters["stats"]["unique_graphs"] == built


# ------------------------------------------------------------------ Hopper compilation
def compile_all() -> dict[str, str]:
    """PTX of the two kernels for an H100/H200 (sm_90), bfloat16, 950M's heads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def ptx(fn, signature: dict, constants: dict) -> str:
        sig = {**signature, **dict.fromkeys(constants, "constexpr")}
        # pointers 16-byte aligned, as Triton specialises them at launch
        attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(signature.values()) if t[0] == "*"}
        src = ASTSource(fn, sig, constants, attrs)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]

    sig = {n: "*bf16" for n in ("q_ptr", "k_pool", "v_pool")} | {"table_ptr": "*i32", "len_ptr": "*i32"}
    sig |= {"part_o": "*fp32", "part_ml": "*fp32", "stride_qb": "i32", "stride_qh": "i32"}
    sig |= {"W": "i32", "n_splits": "i32", "qk_scale": "fp32"}
    consts = dict(REP=4, KVH=6, BS=16, HD=64, TILE=64, BLOCK_Q=16, DOT_PRECISION="tf32", UPCAST_DOT=False)
    out = {"decode": ptx(paged_attention.paged_decode_kernel, sig, consts)}
    sig = {"part_o": "*fp32", "part_ml": "*fp32", "out_ptr": "*bf16", "n_splits": "i32"}
    out["merge"] = ptx(paged_attention.merge_splits_kernel, sig, dict(HD=64, MERGE=16))
    return out


def test_kernels_compile_for_hopper(tmp_path) -> None:
    """The interpreter does not type-check kernels as the compiler does: compile them, and
    check that the pool tiles are read by 16-byte asynchronous copies (pipelined across
    tiles) and the products run on tensor cores."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")]
    )  # helpers
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ptx = json.loads(proc.stdout.splitlines()[-1])
    decode = ptx["decode"]
    assert "cp.async.cg.shared.global" in decode and decode.count("cp.async.commit_group") > 1
    assert re.search(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32", decode)
    assert "st.global" in ptx["merge"]


if __name__ == "__main__":
    print(json.dumps(compile_all()))
