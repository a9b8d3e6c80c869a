"""Fused batch-1 decoding on the GPU: correctness, per-shape GEMV launch sweep, step time.

    python benchmarks/diag/fused_decode.py --presets 140m 360m 950m [--sweep] [--profile 950m]
    python benchmarks/diag/fused_decode.py --presets 950m --overhead | --shapes | --attention | --diagnose | --prefetch
    PYTHONPATH=/old/checkout/src python benchmarks/diag/fused_decode.py --presets 140m 950m --ab old
    python benchmarks/diag/fused_decode.py --presets 140m 950m --modes

For each preset (random bf16 weights, 1,024-token prompt):
  * check: one fused step against the eager model on the same cache (logits max |diff|,
    argmax equal), and 64 greedy tokens of the compiled Generator with and without fusion;
  * time: one fused step captured in a CUDA graph (us/step, steps/s), and Generator steps/s
    with and without fusion;
  * sweep (optional): every GEMV shape of the preset under a grid of launch shapes, over
    rotating weight copies (> L2), effective GB/s of each; the best is printed per shape.

`--modes` compares the fused step's ways of running: 5 kernels per layer (default), the MLP as
one kernel (`fuse_mlp`, 4 per layer) and every layer in one persistent launch with either's phases:
logits against eager bf16 and float32, step times at positions 128, 1,024, 4,096, 8,192 and
32,768 (alternated, best of 3), and with `--sweep` launch shapes of the one-kernel MLP and of the
persistent kernel (warps, programs, row blocks, L2 prefetch); writes
benchmarks/results/decode_modes_<presets>_<date>.json.

`--ab TAG` times the bare step and the Generator at prompts of 128 and 1,024 tokens with default
settings only (so older versions of the package run it too): run two versions alternately in
one device session, as figures from different sessions differ by more than most changes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench_cudagraph

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy import decode_kernels as K
from mobilellm_r1.deploy.fused_decode import STEP_MODES as MODES
from mobilellm_r1.deploy.fused_decode import FusedDecoder, GemvBlocks, gemv_blocks, matrix_shapes
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.model import KVCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import dated_result, result_header, write_result

PROMPT = 1024
N_TOKENS = 128


def check(model, cfg) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, PROMPT + 1), device="cuda", generator=gen)
    model32 = copy.deepcopy(model).float()
    caches = [
        KVCache(cfg, 1, PROMPT + 256, device="cuda", dtype=t)
        for t in (torch.bfloat16,) * 2 + (torch.float32,)
    ]
    with torch.no_grad():
        for c, m in zip(caches, (model, model, model32), strict=True):
            m(ids[:, :PROMPT], cache=c, cache_pos=torch.arange(PROMPT, device="cuda"))
        pos = torch.tensor([PROMPT], device="cuda")
        ref = model(ids[:, PROMPT:], cache=caches[0], cache_pos=pos)[0, -1].float()
        out = FusedDecoder(model, caches[1])(ids[0, PROMPT:], pos)[0].float()
        ref32 = model32(ids[:, PROMPT:], cache=caches[2], cache_pos=pos)[0, -1]
    del model32
    prompt = ids[0, :PROMPT].tolist()
    params = SamplingParams(max_new_tokens=64, stop_token_ids=())
    toks = [
        Generator(model, compile=True, fused=f).generate([prompt], params)[0][0].token_ids
        for f in (True, False)
    ]
    same = next((i for i, (a, b) in enumerate(zip(*toks, strict=False)) if a != b), len(toks[0]))
    by_logits = greedy_by_fused_logits(model, cfg, ids[:, :PROMPT], 64)
    same_argmax = next((i for i, (a, b) in enumerate(zip(toks[0], by_logits, strict=False)) if a != b), 64)
    return {
        "greedy_step_vs_logits_argmax_equal_prefix": same_argmax,
        "logits_max_abs_diff": (out - ref).abs().max().item(),
        "eager_bf16_vs_fp32": (ref - ref32).abs().max().item(),
        "fused_bf16_vs_fp32": (out - ref32).abs().max().item(),
        "logits_ref_max": ref.abs().max().item(),
        "argmax_equal": int(out.argmax()) == int(ref.argmax()),
        "greedy_tokens_equal_prefix": same,
    }


@torch.no_grad()
def greedy_by_fused_logits(model, cfg, prompt: torch.Tensor, n: int) -> list[int]:
    """n greedy tokens from the fused step's logits and torch.argmax (not the Generator's
    in-kernel argmax and bookkeeping)."""
    cache = KVCache(cfg, 1, prompt.shape[1] + n, device="cuda")
    logits = model(prompt, cache=cache, cache_pos=torch.arange(prompt.shape[1], device="cuda"))
    dec, toks = FusedDecoder(model, cache), [int(logits[0, -1].argmax())]
    for i in range(n - 1):
        pos = torch.tensor([prompt.shape[1] + i], device="cuda")
        toks.append(int(dec(torch.tensor([toks[-1]], device="cuda"), pos)[0].argmax()))
    return toks


def step_time_us(model, cfg, cache_len: int | None = None, at: int = PROMPT, **options) -> float:
    """One fused step at position `at` in a CUDA graph, us; `options` go to `FusedDecoder`
    (none: its defaults)."""
    cache = KVCache(cfg, 1, cache_len or PROMPT + 256, device="cuda")
    dec = FusedDecoder(model, cache, **options)
    tok = torch.tensor([7], device="cuda")
    pos = torch.tensor([at], device="cuda")
    return do_bench_cudagraph(lambda: dec(tok, pos), rep=200) * 1e3


def generate_seconds(gen: Generator, prompt: list[int], params: SamplingParams) -> float:
    """Best of 3 timed `generate` calls after one that compiles and captures."""
    gen.generate([prompt], params)
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.generate([prompt], params)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def generator_steps_per_s(model, cfg, fused: bool) -> float:
    gen = Generator(model, compile=True, fused=fused)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT,)).tolist()
    params = SamplingParams(max_new_tokens=N_TOKENS, stop_token_ids=())
    return (N_TOKENS - 1) / generate_seconds(gen, prompt, params)


def ab(model, cfg, name: str, tag: str) -> None:
    """Bare fused step and 256-token Generator runs (prefill included) at prompts 128 and
    1,024, default settings."""
    for plen, cache_len in ((128, 512), (1024, 1536)):
        us = step_time_us(model, cfg, cache_len=cache_len, at=plen)
        prompt = torch.randint(0, cfg.vocab_size, (plen,)).tolist()
        params = SamplingParams(max_new_tokens=256, stop_token_ids=())
        sec = generate_seconds(Generator(model, compile=True), prompt, params)
        print(
            f"{tag} {name} prompt {plen}: bare step {us:.1f} us; generate 256 tokens "
            f"{sec * 1e3:.1f} ms ({256 / sec:.0f} tok/s e2e)",
            flush=True,
        )


def sweep_shape(n: int, k: int, epilogue: int, norm: bool) -> list[tuple[GemvBlocks, float]]:
    rows = 2 * n if epilogue == K.EPILOGUE_SWIGLU else n
    copies = max(2, (256 << 20) // (rows * k * 2))
    ws = [torch.randn(rows, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    out = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    results = []
    for bn, bk, nw in itertools.product((1, 2, 4, 8), (256, 512, 1024), (4, 8)):
        if bn * bk > 16384 or bk > triton.next_power_of_2(k):
            continue

        def run(bn=bn, bk=bk, nw=nw):
            for w in ws:
                K.gemv_kernel[(triton.cdiv(n, bn),)](
                    w,
                    x,
                    g,
                    out,
                    out,
                    out,
                    n,
                    k,
                    1e-5,
                    NORM=norm,
                    EPILOGUE=epilogue,
                    BLOCK_N=bn,
                    BLOCK_K=bk,
                    PDL=False,
                    EARLY=False,
                    num_warps=nw,
                )

        us = do_bench_cudagraph(run, rep=50) * 1e3 / copies
        results.append((GemvBlocks(bn, bk, nw), us))
    return sorted(results, key=lambda r: r[1])


def sweep(cfg, name: str) -> list[str]:
    kernel = {  # epilogue, RMSNorm folded in
        "qkv": (K.EPILOGUE_STORE, True),
        "o": (K.EPILOGUE_RESIDUAL, False),
        "gate_up": (K.EPILOGUE_SWIGLU, True),
        "down": (K.EPILOGUE_RESIDUAL, False),
        "lm_head": (K.EPILOGUE_STORE, True),
    }
    lines = []
    for shape, (n, k) in matrix_shapes(cfg).items():
        epi, norm = kernel[shape]
        res = sweep_shape(n, k, epi, norm)
        nbytes = (2 if epi == K.EPILOGUE_SWIGLU else 1) * n * k * 2
        for blocks, us in res[:3]:
            lines.append(
                f"{name:5s} {shape:8s} N={n:6d} K={k:5d} {blocks} {us:7.2f} us {nbytes / us / 1e3:6.0f} GB/s"
            )
        print("\n".join(lines[-3:]), flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["140m", "360m", "950m"])
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--profile", default=None, help="preset whose fused step's kernels to list")
    p.add_argument("--diagnose", action="store_true", help="only: PDL on/off step times, Generator kernels")
    p.add_argument(
        "--overhead", action="store_true", help="only: Generator step vs bare fused step, its kernels"
    )
    p.add_argument(
        "--shapes", action="store_true", help="only: GEMV launch shapes timed inside the full step"
    )
    p.add_argument("--attention", action="store_true", help="only: attention tiles/splits/cache length")
    p.add_argument("--prefetch", action="store_true", help="only: L2 prefetch budgets")
    p.add_argument(
        "--launch", action="store_true", help="only: PDL launch order per matrix, attention splits"
    )
    p.add_argument("--ablate", action="store_true", help="only: step time with each kernel kind left out")
    p.add_argument("--ab", default=None, metavar="TAG", help="only: A/B figures of this version, tagged")
    p.add_argument("--modes", action="store_true", help="only: 5 kernels per layer vs fuse_mlp vs persistent")
    p.add_argument("--positions", type=int, nargs="+", default=[128, 1024, 4096, 8192, 32768], help="--modes")
    args = p.parse_args()
    table, sweeps, modes = [], [], {}
    only = (
        args.overhead
        or args.shapes
        or args.attention
        or args.diagnose
        or args.ab
        or args.prefetch
        or args.ablate
        or args.launch
        or args.modes
    )
    for name, cfg, model in models(args.presets):
        if args.overhead:
            generator_overhead(model, cfg, name)
        if args.shapes or args.launch:
            shapes_in_step(model, cfg, name, full=args.shapes)
        if args.attention:
            attention_sweep(model, cfg, name)
        if args.diagnose:
            diagnose(model, cfg, name)
        if args.prefetch:
            prefetch_sweep(model, cfg, name)
        if args.ablate:
            ablate(model, cfg, name)
        if args.ab:
            ab(model, cfg, name, args.ab)
        if args.modes:  # written after every preset: a cut-off run keeps what it measured
            modes[name] = modes_ab(model, cfg, name, args.sweep, args.positions)
            out = dated_result(f"decode_modes_{'-'.join(args.presets)}")
            write_result({**result_header("fused_decode --modes"), "presets": modes}, out)
        if only:
            continue
        c = check(model, cfg)
        us = step_time_us(model, cfg)
        fused = generator_steps_per_s(model, cfg, True)
        plain = generator_steps_per_s(model, cfg, False)
        table.append((name, c, us, fused, plain))
        print(
            name, c, f"{us:.1f} us/step", f"generator fused {fused:.0f} plain {plain:.0f} steps/s", flush=True
        )
        if args.profile == name:
            profile_step(model, cfg)
    if only:
        return
    if args.sweep:
        for name in args.presets:
            sweeps += sweep(preset(name), name)
    print("\n".join(sweeps))
    print(
        "preset | fused step us (graph) | steps/s | Generator fused | Generator compiled | logits max|diff| | greedy equal"
    )
    for name, c, us, fused, plain in table:
        print(
            f"{name} | {us:.1f} | {1e6 / us:.0f} | {fused:.0f} | {plain:.0f} | "
            f"{c['logits_max_abs_diff']:.3g} (of {c['logits_ref_max']:.3g}) | {c['greedy_tokens_equal_prefix']}/64"
        )


def models(presets: list[str]):
    """(name, config, random-weight bf16 model) per preset, one model on the GPU at a time."""
    for name in presets:
        cfg = preset(name)
        model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
        yield name, cfg, model
        del model
        torch.cuda.empty_cache()


def diagnose(model, cfg, name: str) -> None:
    """Step time with and without PDL by attention tile size, per-kernel durations, Generator rate."""
    for block in (16, 32, 64, 128):
        on = step_time_us(model, cfg, pdl=True, attn_block=block)
        off = step_time_us(model, cfg, pdl=False, attn_block=block)
        print(f"{name}: attention block {block}: fused step {on:.1f} us with PDL, {off:.1f} without")
    kernel_durations(model, cfg)
    print(f"{name}: Generator fused: {generator_steps_per_s(model, cfg, True):.0f} steps/s", flush=True)


def kernel_durations(model, cfg) -> None:
    """Mean duration of each kernel of a layer (qkv, attend, o, gate_up, down), PDL off so
    that kernels do not overlap."""
    from torch.profiler import ProfilerActivity, profile

    dec = FusedDecoder(model, KVCache(cfg, 1, PROMPT + 256, device="cuda"), pdl=False)
    tok, pos = torch.tensor([7], device="cuda"), torch.tensor([PROMPT], device="cuda")
    dec(tok, pos)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            dec(tok, pos)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    per_step = 2 + 5 * cfg.num_hidden_layers
    names = ["qkv", "attend", "o", "gate_up", "down"]
    sums = dict.fromkeys([*names, "embed", "lm_head"], 0.0)
    for i, e in enumerate(kernels):
        j = i % per_step
        key = "embed" if j == 0 else "lm_head" if j == per_step - 1 else names[(j - 1) % 5]
        sums[key] += e.device_time_total / 5
    layers = cfg.num_hidden_layers
    print(
        "  per-kernel us (per layer / total): "
        + ", ".join(
            f"{k} {v / (1 if k in ('embed', 'lm_head') else layers):.2f}/{v:.0f}" for k, v in sums.items()
        ),
        f"sum {sum(sums.values()):.0f}",
        flush=True,
    )


@torch.inference_mode()
def generator_overhead(model, cfg, name: str) -> None:
    """Decode-only Generator time per step against the bare fused step on the Generator's own
    cache, and the kernels of one replayed block of steps that are not the model's."""
    from torch.profiler import ProfilerActivity, profile

    gen = Generator(model, compile=True, fused=True)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT,)).tolist()
    total = generate_seconds(gen, prompt, SamplingParams(max_new_tokens=256, stop_token_ids=()))
    prefill = generate_seconds(gen, prompt, SamplingParams(max_new_tokens=1, stop_token_ids=()))
    per_step = (total - prefill) / 255 * 1e6
    runner = next(iter(gen._steps.values()))
    runner(None)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        runner(None)
    torch.cuda.synchronize()
    replay = (time.perf_counter() - t0) / (10 * runner.steps) * 1e6
    dec = FusedDecoder(model, gen._cache)
    tok, pos = torch.tensor([7], device="cuda"), torch.tensor([PROMPT], device="cuda")
    bare = do_bench_cudagraph(lambda: dec(tok, pos), rep=200) * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner(None)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ours = ("gemv_kernel", "attend_kernel", "embed_kernel", "mlp_kernel", "step_kernel", "greedy_advance")
    other: dict[str, float] = {}
    for e in kernels:
        if not e.name.startswith(ours):
            other[e.name[:70]] = other.get(e.name[:70], 0.0) + e.device_time_total / runner.steps
    busy = sum(e.device_time_total for e in kernels) / runner.steps
    span = (max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels)) / runner.steps
    print(
        f"{name}: cache {gen._cache.max_len} slots; decode {per_step:.1f} us/step (generate), "
        f"{replay:.1f} (block replays), bare fused step {bare:.1f}; kernels busy {busy:.1f} us/step "
        f"over a {span:.1f} us span",
        flush=True,
    )
    for k, v in sorted(other.items(), key=lambda kv: -kv[1]):
        print(f"   other kernel {v:7.2f} us/step  {k}")


def attention_sweep(model, cfg, name: str) -> None:
    """Full fused step time against the cache length (position fixed), the attention tile
    size, the programs per kv head and the partial results merged per step."""
    from mobilellm_r1.deploy import fused_decode

    for cache_len in (1280, 1536, 4352, 32768):
        us = step_time_us(model, cfg, cache_len=cache_len)
        print(f"{name}: pos {PROMPT}, cache {cache_len}: {us:.1f} us/step", flush=True)
    default = fused_decode.MERGE_SPLITS, fused_decode.ATTENTION_WARPS
    for merge, warps in ((64, 4), (128, 4), (64, 8)):
        fused_decode.MERGE_SPLITS, fused_decode.ATTENTION_WARPS = merge, warps
        for at, cache_len in ((PROMPT, 1536), (4096, 4352)):
            for block in (16, 32):
                for splits in (32, 64, 88, 128):
                    if warps == 8 and (block, splits) not in ((16, 88), (32, 44)):
                        continue
                    us = step_time_us(
                        model, cfg, cache_len=cache_len, at=at, attn_block=block, attn_splits=splits
                    )
                    print(
                        f"{name}: pos {at}: merge {merge}, {warps} warps, tile {block}, {splits} splits "
                        f"per kv head: {us:.1f} us/step",
                        flush=True,
                    )
    fused_decode.MERGE_SPLITS, fused_decode.ATTENTION_WARPS = default


def ablate(model, cfg, name: str) -> None:
    """Step time with one kind of kernel (qkv, attention, o, gate_up, down, lm_head) not
    launched: what each costs inside the PDL chain (the logits are meaningless)."""
    base = step_time_us(model, cfg)
    print(f"{name}: full step {base:.1f} us", flush=True)
    gemv, attend = FusedDecoder._gemv, FusedDecoder._attend
    for kind in ("qkv", "attention", "o", "gate_up", "down", "lm_head", "o+gate_up"):
        left_out = kind.split("+")
        FusedDecoder._gemv = lambda self, n, *a, skip=left_out, **k: (
            None if n in skip else gemv(self, n, *a, **k)
        )
        FusedDecoder._attend = lambda self, *a, skip=left_out: (
            None if "attention" in skip else attend(self, *a)
        )
        us = step_time_us(model, cfg)
        print(f"{name}: without {kind}: {us:.1f} us ({base - us:.1f} us in all)", flush=True)
    FusedDecoder._gemv, FusedDecoder._attend = gemv, attend


def prefetch_sweep(model, cfg, name: str) -> None:
    """Full fused step time by the MLP bytes each attention kernel prefetches into L2 and by
    the prefetching programs."""
    from mobilellm_r1.deploy import fused_decode

    default = fused_decode.PREFETCH_PROGRAMS
    for programs in (48, 96, 192):
        fused_decode.PREFETCH_PROGRAMS = programs
        for budget in (0, 2, 4, 8, 16):
            if budget == 0 and programs != 96:
                continue
            for at, cache_len in ((PROMPT, 1536), (4096, 4352)):
                us = step_time_us(model, cfg, cache_len=cache_len, at=at, prefetch=budget << 20)
                print(
                    f"{name}: pos {at}: {programs} prefetch programs, prefetch {budget} MB per layer: "
                    f"{us:.1f} us/step",
                    flush=True,
                )
    fused_decode.PREFETCH_PROGRAMS = default


def shapes_in_step(model, cfg, name: str, full: bool = True) -> None:
    """Full fused step time (CUDA graph, PDL on) with one matrix's launch shape varied at a
    time, then with the PDL launch of the next kernel after the wait (early=False)."""
    dims = matrix_shapes(cfg)
    base = {k: gemv_blocks(k, n, kk) for k, (n, kk) in dims.items()}
    print(f"{name}: default {base}: {step_time_us(model, cfg):.1f} us/step", flush=True)
    shapes = [(1, 1024, 4), (2, 512, 4), (2, 1024, 4), (2, 2048, 4), (4, 512, 4), (4, 1024, 8), (2, 4096, 8)]
    for matrix, (_, k) in dims.items() if full else ():
        for bn, bk, nw in shapes:
            blocks = GemvBlocks(bn, bk, nw)
            if blocks == base[matrix] or bk > 2 * triton.next_power_of_2(k):
                continue
            us = step_time_us(model, cfg, blocks={matrix: blocks})
            print(f"{name}: {matrix} {bn} x {bk}, {nw} warps: {us:.1f} us/step", flush=True)
    late = {k: dataclasses.replace(b, early=False) for k, b in base.items()}
    print(f"{name}: next kernel launched after the wait: {step_time_us(model, cfg, blocks=late):.1f} us/step")
    for matrix in base:
        us = step_time_us(model, cfg, blocks={matrix: late[matrix]})
        print(f"{name}: {matrix} launches the next kernel after its wait: {us:.1f} us/step", flush=True)
    for splits in (16, 24, 48):
        us = step_time_us(model, cfg, attn_splits=splits)
        print(f"{name}: {splits} attention splits per kv head: {us:.1f} us/step", flush=True)


def modes_ab(model, cfg, name: str, sweeps: bool, positions: list[int]) -> dict:
    """The fused step's modes (`fused_decode.STEP_MODES`): exactness, step times (alternated, best of 3),
    then (`sweeps`) launch shapes of the one-kernel MLP and of the persistent kernel. A mode that
    fails (compile error, barrier timeout) is recorded and left out of the timings."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, PROMPT + 1), device="cuda", generator=gen)
    model32 = copy.deepcopy(model).float()
    pos = torch.tensor([PROMPT], device="cuda")
    logits, timeouts, errors, kernels = {}, {}, {}, {}
    with torch.no_grad():
        variants = [("eager32", model32, None), ("eager", model, None)]
        for label, m, options in variants + [(mode, model, options) for mode, options in MODES.items()]:
            cache = KVCache(cfg, 1, PROMPT + 256, device="cuda", dtype=next(m.parameters()).dtype)
            m(ids[:, :PROMPT], cache=cache, cache_pos=torch.arange(PROMPT, device="cuda"))
            if options is None:
                logits[label] = m(ids[:, PROMPT:], cache=cache, cache_pos=pos)[0, -1].float()
                continue
            try:
                dec = FusedDecoder(m, cache, **options)
                logits[label] = dec(ids[0, PROMPT:], pos)[0].float()
                timeouts[label] = dec.barrier_timeouts()
                if dec.persistent:  # registers, spills, shared bytes and the grid it sized
                    kernels[label] = {**dec.step_kernel_info, "programs": dec.programs}
            except Exception as err:  # recorded; the other modes go on
                errors[label] = f"{type(err).__name__}: {err}"[:500]
                print(f"{name}: {label} failed: {errors[label]}", flush=True)
    del model32
    ref32 = logits["eager32"]
    errs = {k: (v - ref32).abs().max().item() for k, v in logits.items() if k != "eager32"}
    ok = [mode for mode in MODES if mode in logits and not timeouts.get(mode)]
    same = {
        mode: int(logits[mode].argmax()) == int(logits["eager"].argmax()) for mode in MODES if mode in logits
    }
    shown = {k: round(v, 4) for k, v in errs.items()}
    print(f"{name}: max |logit - float32 eager|: {shown}; argmax equal to eager: {same}", flush=True)
    print(f"{name}: barrier timeouts {timeouts}; persistent kernels {kernels}", flush=True)
    result = {
        "max_abs_diff_vs_float32": errs,
        "argmax_equal_to_eager": same,
        "barrier_timeouts": {k: v for k, v in timeouts.items() if k.startswith("persistent")},
        "persistent_kernels": kernels,
        "errors": errors,
        "positions": {},
        "mlp_shapes": {},
        "persistent_shapes": {},
    }
    for at in positions:
        runs = {mode: [] for mode in ok}
        for _ in range(3):  # alternated, so drift within the session hits every mode
            for mode in ok:
                options = MODES[mode]
                runs[mode].append(step_time_us(model, cfg, cache_len=at + 256, at=at, **options))
        best = {mode: min(t) for mode, t in runs.items()}
        result["positions"][at] = {f"{mode}_us": us for mode, us in best.items()}
        shown = ", ".join(f"{mode} {us:.1f} us ({1e6 / us:.0f} tok/s)" for mode, us in best.items())
        print(f"{name} position {at}: {shown}", flush=True)
    if not sweeps:
        return result
    for rows, bn, bk, nw in itertools.product((8, 16, 32, 64), (2, 4, 8), (512,), (4, 8)):
        if rows % bn:
            continue
        us = step_time_us(model, cfg, fuse_mlp=True, blocks={"mlp": GemvBlocks(bn, bk, nw, rows=rows)})
        result["mlp_shapes"][f"rows {rows}, {bn} x {bk}, {nw} warps"] = us
        print(f"{name}: mlp rows {rows}, {bn} x {bk}, {nw} warps: {us:.1f} us/step", flush=True)
    result["persistent_shapes"] = persistent_sweep(model, cfg, name)
    return result


def persistent_sweep(model, cfg, name: str) -> dict:
    """Persistent-kernel step times, one setting varied at a time from the defaults: warps per
    program, programs (one per SM or as many as fit), rows per qkv / o item, hidden units per
    MLP item, L2 prefetch bytes per barrier."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    shapes = matrix_shapes(cfg)
    variants = [("defaults", {})]
    variants += [(f"{nw} warps", {"persistent_warps": nw}) for nw in (8, 16)]
    variants += [(f"{sms} programs (one per SM)", {"persistent_programs": sms})]
    for bn in (2, 4, 8, 16):
        blocks = {m: GemvBlocks(bn, gemv_blocks(m, *shapes[m]).block_k) for m in ("qkv", "o")}
        variants.append((f"qkv/o items of {bn} rows", {"blocks": blocks}))
    for rows in (16, 32, 64):
        variants.append((f"mlp items of {rows} units", {"blocks": {"mlp": GemvBlocks(4, 512, rows=rows)}}))
    variants += [(f"prefetch {mb} MB", {"persistent_prefetch": mb << 20}) for mb in (0, 1, 16)]
    out = {}
    for label, options in variants:
        cache = KVCache(cfg, 1, PROMPT + 256, device="cuda")
        tok, pos = torch.tensor([7], device="cuda"), torch.tensor([PROMPT], device="cuda")
        try:  # a setting that does not compile is recorded, the sweep goes on
            dec = FusedDecoder(model, cache, persistent=True, **options)
            us = do_bench_cudagraph(lambda: dec(tok, pos), rep=200) * 1e3  # noqa: B023 (used at once)
        except Exception as err:
            out[label] = {"error": f"{type(err).__name__}: {err}"[:300]}
        else:
            out[label] = {"us": us, "programs": dec.programs, "barrier_timeouts": dec.barrier_timeouts()}
            out[label] |= dec.step_kernel_info  # registers and spills: the phase that needs most sets them
        print(f"{name}: persistent, {label}: {out[label]}", flush=True)
    return out


def profile_step(model, cfg) -> None:
    from torch.profiler import ProfilerActivity, profile

    cache = KVCache(cfg, 1, PROMPT + 256, device="cuda")
    dec = FusedDecoder(model, cache)
    tok, pos = torch.tensor([7], device="cuda"), torch.tensor([PROMPT], device="cuda")
    graph = torch.cuda.CUDAGraph()
    dec(tok, pos)
    with torch.cuda.graph(graph):
        dec(tok, pos)
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
