"""The fused-decode kernels compile for an H100 (sm_90) on this GPU-less machine. The CPU
interpreter that runs them in the other tests neither type-checks them as the compiler does
nor reaches the parts that only run on GPUs (PDL, L2 prefetch, the argmax atomics).

The interpreter is on for the whole test session (conftest.py) and decides at import time
how kernels are wrapped, so the compilation runs in a subprocess of this file without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

EPILOGUES = ("store", "residual", "swiglu", "argmax")


def compile_all() -> dict[str, str]:
    """PTX of every kernel variant that the fused step launches, by name."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mobilellm_r1.deploy import decode_attention as A
    from mobilellm_r1.deploy import decode_kernels as K
    from mobilellm_r1.deploy import decode_persistent as P

    def ptx(fn, signature: dict, constants: dict) -> str:
        sig = {**signature, **dict.fromkeys(constants, "constexpr")}
        src = ASTSource(fn, sig, constants)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]

    out = {}
    sig = {n: "*bf16" for n in ("w_ptr", "x_ptr", "norm_ptr", "res_ptr", "out_ptr")}
    sig |= {"best_ptr": "*i64", "N": "i32", "eps": "fp32"}
    for epilogue, name in enumerate(EPILOGUES):
        consts = dict(K=1536, NORM=True, EPILOGUE=epilogue, BLOCK_N=2, BLOCK_K=512, PDL=True)
        consts |= dict(acc_ptr=None, xout_ptr=None, FOLD=False)
        consts["EARLY"] = epilogue % 2 == 0
        out[f"gemv_{name}"] = ptx(K.gemv_kernel, sig, consts)
    fold = sig | {"acc_ptr": "*fp32", "xout_ptr": "*bf16"}
    consts = dict(K=1536, NORM=True, EPILOGUE=0, BLOCK_N=2, BLOCK_K=512, PDL=True, EARLY=True, FOLD=True)
    out["gemv_fold"] = ptx(K.gemv_kernel, fold, consts)
    sig = {n: "*bf16" for n in ("w_ptr", "wt_ptr", "x_ptr", "norm_ptr")} | {
        "acc_ptr": "*fp32",
        "zero_ptr": "*fp32",
    }
    sig |= {"H": "i32", "eps": "fp32"}
    consts = dict(K=1536, ROWS=48, BLOCK_N=4, BLOCK_K=512, BLOCK_D=2048, PDL=True, EARLY=True)
    out["mlp"] = ptx(K.mlp_kernel, sig, consts)
    sig = {n: "*bf16" for n in ("qkv_ptr", "k_cache", "v_cache", "out_ptr")}
    sig |= {
        "pos_ptr": "*i64",
        "inv_freq_ptr": "*fp32",
        "part_o": "*fp32",
        "part_ml": "*fp32",
        "tickets": "*i32",
    }
    sig |= {
        "pf0": "*u8",
        "pf1": "*u8",
        "pf2": "*u8",
        "pf0_bytes": "i32",
        "pf1_bytes": "i32",
        "pf2_bytes": "i32",
    }
    sig |= {"S_max": "i32", "n_splits": "i32", "eps": "fp32", "sm_scale": "fp32"}
    sig |= {"attn_scale": "fp32", "floor_scale": "fp32"}
    consts = dict(H=24, KVH=6, HD=64, BLOCK_REP=4, BLOCK_Q=16, BLOCK_S=16, MERGE=64, DOT_PRECISION="tf32")
    consts |= dict(ROPE=True, QK_NORM=True, TEMP_TUNING=True, PF_LINES=256, PDL=True)
    for prefetch in (False, True):
        out[f"attend_prefetch_{prefetch}"] = ptx(A.attend_kernel, sig, {**consts, "PREFETCH": prefetch})
    sig = {n: "*i64" for n in ("best_ptr", "tok_ptr", "pos_ptr", "idx_ptr", "stop_ptr", "out_ptr")}
    sig |= {"finished_ptr": "*i1", "n_stop": "i32", "pad_id": "i32"}
    out["greedy_advance"] = ptx(K.greedy_advance_kernel, sig, dict(BLOCK_STOP=4, PDL=True))
    sig = {"table_ptr": "*bf16", "tok_ptr": "*i64", "out_ptr": "*bf16", "D": "i32"}
    out["embed"] = ptx(K.embed_kernel, sig, dict(BLOCK=1024, PDL=True, zero_ptr=None, ZERO=False))
    out["embed_zero"] = ptx(
        K.embed_kernel, sig | {"zero_ptr": "*fp32"}, dict(BLOCK=1024, PDL=True, ZERO=True)
    )
    sig = {n: "*bf16" for n in ("embed_ptr", "x_ptr", "xin_ptr", "qkv_ptr", "attn_ptr", "h_ptr")}
    sig |= {
        "layers_ptr": "*i64",
        "rope_ptr": "*i32",
        "tok_ptr": "*i64",
        "acc_ptr": "*fp32",
        "pos_ptr": "*i64",
    }
    sig |= {
        "inv_freq_ptr": "*fp32",
        "part_o": "*fp32",
        "part_ml": "*fp32",
        "tickets": "*i32",
        "bar_ptr": "*i32",
    }
    sig |= dict.fromkeys(("lo", "hi", "n_barriers", "S_max", "n_splits"), "i32")
    sig |= dict.fromkeys(("eps", "sm_scale", "attn_scale", "floor_scale"), "fp32")
    consts = dict(D=1536, HIDDEN=6144, QKV_N=2, QKV_K=2048, O_N=2, O_K=2048, MLP_ROWS=48, MLP_N=4, MLP_K=512)
    consts |= dict(
        BLOCK_D=2048, EMBED=1024, H=24, KVH=6, HD=64, BLOCK_REP=4, BLOCK_Q=16, BLOCK_S=16, MERGE=64
    )
    consts |= dict(DOT_PRECISION="tf32", QK_NORM=True, TEMP_TUNING=True, BARRIER=True, PDL=True)
    consts |= dict(PF_BYTES=0, PF_QKV=0, PF_O=0, PF_MLP=0, PF_KV=0, PF_LINES=256)
    consts |= dict(GU_N=4, GU_K=512, DN_N=2, DN_K=4096, PER_LAYER=5)
    out["step"] = ptx(P.step_kernel, sig, consts)  # 5 phases per layer; then 4, with L2 prefetch
    prefetch = dict(PF_BYTES=4 << 20, PF_QKV=4 << 20, PF_O=4 << 20, PF_MLP=1 << 20, PF_KV=1 << 18)
    out["step_prefetch"] = ptx(P.step_kernel, sig, consts | prefetch | dict(PER_LAYER=4))
    return out


def test_kernels_compile_for_hopper(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ptx = json.loads(proc.stdout.splitlines()[-1])
    for name, code in ptx.items():  # every kernel chains with programmatic dependent launch
        assert "griddepcontrol.wait" in code, name
    for name in EPILOGUES:
        code = ptx[f"gemv_{name}"]
        assert ("atom.global" in code or "red.global" in code) == (name == "argmax"), name
    assert re.search(r"(red|atom)\.global\.\S*add\.f32", ptx["mlp"])  # the split-K down product
    assert "prefetch.global.L2" in ptx["attend_prefetch_True"]
    assert "prefetch.global.L2" not in ptx["attend_prefetch_False"]
    # the persistent step's grid barrier: arrive with release semantics, spin with acquire loads
    assert re.search(r"atom\.global\.gpu\.acq_rel\.add\.u32", ptx["step"])
    assert re.search(r"ld\.global\.gpu\.acquire\.b32", ptx["step"])
    assert "griddepcontrol.launch_dependents" in ptx["step"]
    assert "prefetch.global.L2" in ptx["step_prefetch"]  # the next phase's bytes, before each barrier
    assert "prefetch.global.L2" not in ptx["step"]


if __name__ == "__main__":
    print(json.dumps(compile_all()))
