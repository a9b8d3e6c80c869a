"""Exact forward-mode flash attention (`curation.jvp_attention`): the reference and the Triton
kernel (run by Triton's CPU interpreter, see tests/conftest.py) against ``torch.func.jvp`` of
math SDPA; vmap over tangents (and over primals around it) against separate jvps; `jvp_sdpa`
routing only causal unmasked calls; influence scores through it against per-sample gradients
and the math-SDPA path; the kernel's compilation for Hopper (in a subprocess without the
interpreter: the interpreter does not type-check as the compiler does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from helpers import small_config
from mobilellm_r1.curation import jvp_attention
from mobilellm_r1.curation.influence import (
    jvp_scores,
    pad_batch,
    probe_gradient,
    score_per_sample_grad,
    select_params,
)
from mobilellm_r1.curation.jvp_attention import (
    attention_jvp,
    attention_jvp_reference,
    attention_jvp_triton,
    jvp_sdpa,
)
from mobilellm_r1.model import build_model
from mobilellm_r1.model.model import doc_ids_from_position_ids

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    # bf16 outputs (an ulp is 1/128 relative), and the interpreter truncates float32 to bf16
    # where GPUs round to nearest
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
# (batch, heads, kv heads, T, head_dim, kernel block): GQA over several query and key blocks
# with T not a multiple of them; one token; head_dim 32 at the default 64-row blocks
CASES = [(2, 4, 2, 37, 64, 16), (1, 4, 2, 1, 32, 16), (2, 2, 2, 70, 32, None)]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def case(b: int, h: int, kvh: int, t: int, hd: int, dtype: torch.dtype, n: int = 0, seed: int = 0):
    """Primals q, k, v and tangents dq, dk, dv (with a leading dim of n directions if n)."""
    gen = torch.Generator().manual_seed(seed)
    lead = (n,) if n else ()
    shapes = [(b, h, t, hd), (b, kvh, t, hd), (b, kvh, t, hd)]
    primals = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    return primals, [torch.randn(*lead, *s, generator=gen).to(dtype) for s in shapes]


def math_jvp(primals, tangents) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, dO) of math SDPA through torch.func.jvp, in float64 on the (rounded) inputs."""
    with sdpa_kernel(SDPBackend.MATH):
        return jvp(sdpa, tuple(x.double() for x in primals), tuple(x.double() for x in tangents))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("b", "h", "kvh", "t", "hd", "block"), CASES, ids=["gqa", "t1", "hd32"])
def test_reference_and_kernel_equal_torch_func_jvp(b, h, kvh, t, hd, block, dtype, monkeypatch) -> None:
    if block:
        monkeypatch.setattr(jvp_attention, "BLOCK_M", block)
        monkeypatch.setattr(jvp_attention, "BLOCK_N", block)
    primals, tangents = case(b, h, kvh, t, hd, dtype)
    want_o, want_do = math_jvp(primals, tangents)
    scale = hd**-0.5
    results = {
        "reference": attention_jvp_reference(*primals, *tangents, block=16),
        "kernel": attention_jvp_triton(*primals, tangents, scale),
    }
    for name, (o, do) in results.items():
        assert o.dtype == do.dtype == dtype and o.shape == do.shape == want_o.shape, name
        err = (do.double() - want_do).abs().max().item()
        print(f"{name:>9} {dtype}: max |dO - torch.func| {err:.1e} (max |dO| {want_do.abs().max():.2f})")
        torch.testing.assert_close(o.double(), want_o, **TOLERANCE[dtype], msg=name)
        torch.testing.assert_close(do.double(), want_do, **TOLERANCE[dtype], msg=name)
    o_only, none = attention_jvp_triton(*primals, None, scale)  # the forward-only kernel
    assert none is None
    torch.testing.assert_close(o_only, results["kernel"][0], atol=0, rtol=0)


@pytest.mark.parametrize("kernel", [False, True], ids=["reference", "kernel"])
def test_vmap_over_tangents_equals_separate_jvps(kernel: bool, monkeypatch) -> None:
    """vmap over 3 directions through jvp_sdpa equals 3 jvps of math SDPA; so does a vmap over
    2 sets of primals around it (the op's vmap rule folds both) and a vmap over primals inside
    the jvp (JvpAttention's own vmap rule)."""
    monkeypatch.setattr(jvp_attention, "CPU_KERNEL", kernel)
    primals, tangents = case(2, 4, 2, 21, 16, torch.float32, n=3)
    want = torch.stack([math_jvp(primals, [t[i] for t in tangents])[1] for i in range(3)]).float()

    def directions(q, k, v):
        return vmap(lambda dq, dk, dv: jvp(sdpa, (q, k, v), (dq, dk, dv))[1])(*tangents)

    two = [torch.stack([x, 0.5 * x]) for x in primals]  # [2, B, ...]
    with jvp_sdpa() as mode:
        got = directions(*primals)
        nested = vmap(directions)(*two)
        inner = jvp(vmap(sdpa), tuple(two), tuple(t[:2] for t in tangents))
    assert mode.routed == 3 and mode.passed == 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nested[0], want, atol=1e-5, rtol=1e-5)
    half = [math_jvp([x[1] for x in two], [t[i] for t in tangents])[1] for i in range(3)]
    torch.testing.assert_close(nested[1], torch.stack(half).float(), atol=1e-5, rtol=1e-5)
    with sdpa_kernel(SDPBackend.MATH):
        inner_want = jvp(vmap(sdpa), tuple(two), tuple(t[:2] for t in tangents))
    for a, b in zip(inner, inner_want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_jvp_sdpa_routes_causal_calls_only() -> None:
    """In a tiny model's forward: causal unmasked calls are routed (same logits, also under bf16
    autocast), document-masked calls pass through untouched (bit-identical), each counted; the
    routed path has no backward."""
    model = build_model(small_config(), seed=0).eval()
    ids = torch.randint(3, 1000, (2, 19), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(7), torch.arange(12)])[None].expand(2, -1)
    with torch.no_grad():
        plain = model(ids)
        packed = model(ids, doc_ids=doc_ids_from_position_ids(positions))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(ids)
        with jvp_sdpa() as mode:
            routed = model(ids)
        assert (mode.routed, mode.passed) == (2, 0)
        with jvp_sdpa() as mode:
            passed = model(ids, doc_ids=doc_ids_from_position_ids(positions))
        assert (mode.routed, mode.passed) == (0, 2)
        with jvp_sdpa() as mode, torch.autocast("cpu", dtype=torch.bfloat16):
            routed_half = model(ids)
        assert mode.routed == 2
    torch.testing.assert_close(routed, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(passed, packed)
    assert routed_half.dtype == half.dtype == torch.bfloat16
    torch.testing.assert_close(routed_half, half, atol=0.1, rtol=0.05)
    with jvp_sdpa(), pytest.raises(RuntimeError, match="forward-mode"):
        model(ids).sum().backward()


@pytest.mark.parametrize("kernel", [False, True], ids=["reference", "kernel"])
def test_jvp_scores_equal_per_sample_gradients(kernel: bool, monkeypatch) -> None:
    """Influence scores of 2 vmapped queries through jvp_sdpa (on the reference, or the kernel)
    equal u^T grad L(x) from per-sample gradients and the math-SDPA forward-mode path (float32)."""
    monkeypatch.setattr(jvp_attention, "CPU_KERNEL", kernel)
    model = build_model(small_config(), seed=0)
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in (24, 9, 17, 1)]
    params = select_params(model, "all")
    u = probe_gradient(model, [torch.randint(3, 1000, (12,), generator=gen).tolist()], params)
    queries = [u, [2.0 * x for x in u]]
    ids, labels = pad_batch(rows)
    new = jvp_scores(model, params, queries, ids, labels)
    old = jvp_scores(model, params, queries, ids, labels, jvp_attention=False)
    grads = score_per_sample_grad(model, rows, params, u, batch_size=4).float()
    scale = grads.abs().max()
    print(f"max |new - grad| / max |grad| {((new[0] - grads).abs().max() / scale):.1e}")
    assert new[0, -1] == 0.0  # a one-token row has no target
    torch.testing.assert_close(new[0], grads, atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(new[1], 2.0 * new[0], atol=1e-6 * scale, rtol=1e-5)
    torch.testing.assert_close(new, old, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(q=torch.zeros(2, 4, 5)), r"q must be 4-d"),
        (dict(k=torch.zeros(2, 3, 5, 16), v=torch.zeros(2, 3, 5, 16)), "4 heads are not a multiple of k's 3"),
        (dict(v=torch.zeros(2, 2, 6, 16)), r"k \(2, 2, 5, 16\) and v \(2, 2, 6, 16\) must be"),
        (dict(dk=torch.zeros(6, 2, 5, 16)), r"dk \(6, 2, 5, 16\) must be shaped as its primal"),
        (dict(dv=torch.zeros(2, 2, 5, 16, dtype=torch.float64)), "dv is torch.float64"),
    ],
)
def test_bad_arguments_name_the_argument(change, message) -> None:
    shapes = dict(q=(2, 4, 5, 16), k=(2, 2, 5, 16), v=(2, 2, 5, 16))
    args = {**shapes, **{f"d{n}": s for n, s in shapes.items()}}
    args = {n: torch.zeros(s) for n, s in args.items()} | change
    with pytest.raises(ValueError, match=message):
        attention_jvp(*args.values(), 0.25)


# ------------------------------------------------------------------ Hopper compilation
def compile_all() -> dict[str, dict]:
    """PTX facts of the kernel for an H100/H200 (sm_90) as launched: bfloat16 with and without
    the tangent at head_dim 64, and float32 at 128 (BLOCK_N halved) with TF32 products."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def facts(dtype: str, hd: int, tangent: bool, precision: str) -> dict:
        names = ("q_ptr", "k_ptr", "v_ptr", "dq_ptr", "dk_ptr", "dv_ptr", "o_ptr", "do_ptr")
        sig = dict.fromkeys(names, f"*{dtype}") | {"T": "i32", "ZP": "i32", "scale": "fp32"}
        sig["strides"] = tuple(("i64", "i32", "i32") for _ in names)
        block_n = jvp_attention.BLOCK_N if hd <= 64 else jvp_attention.BLOCK_N // 2
        consts = dict(H=9, REP=3, HD=hd, BLOCK_M=jvp_attention.BLOCK_M, BLOCK_N=block_n)
        consts |= dict(TANGENT=tangent, PRECISION=precision, UPCAST=False)
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(names))}
        src = ASTSource(
            jvp_attention.jvp_attention_kernel, sig | dict.fromkeys(consts, "constexpr"), consts, attrs
        )
        options = {"num_warps": jvp_attention.NUM_WARPS, "num_stages": jvp_attention.NUM_STAGES}
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
        ptx = kernel.asm["ptx"]
        return {
            "wgmma": ptx.count("wgmma.mma_async"),
            "local": ptx.count(".local"),
            "shared": kernel.metadata.shared,
        }

    return {
        "bf16_jvp": facts("bf16", 64, True, "tf32"),
        "bf16_forward": facts("bf16", 64, False, "tf32"),
        "fp32_jvp_hd128": facts("fp32", 128, True, "tf32"),
    }


def test_kernel_compiles_for_hopper(tmp_path) -> None:
    """Compiles for sm_90: the products on Hopper's asynchronous tensor cores (wgmma; the tangent
    pass has three times the forward's products), no register spills to local memory, shared
    memory within an H100's 227 KiB."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.splitlines()[-1])
    assert (
        facts["bf16_jvp"]["wgmma"] > facts["bf16_forward"]["wgmma"] > 0 and facts["fp32_jvp_hd128"]["wgmma"]
    )
    assert all(f["local"] == 0 and f["shared"] <= 227 * 1024 for f in facts.values()), facts


if __name__ == "__main__":
    print(json.dumps(compile_all()))
