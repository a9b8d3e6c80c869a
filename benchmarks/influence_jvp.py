"""Influence scoring: exact forward-mode rules for attention, the LM head and the body against
PyTorch's (issue 23, item 4), four paths in one process.

`influence.jvp_scores` of synthetic rows of exactly --seq tokens on a preset (random init, float32
weights; bf16 autocast on CUDA, as the 19.6 samples/s baseline of influence_throughput.py), K
probe-gradient queries (K = 1 by default: that baseline's k1 mode; K > 1 are vmapped in one pass),
timed on four paths:

  math : math SDPA's forward-mode rule ([B, H, T, T] scores) and PyTorch's rules for the LM head
         and cross-entropy (tangent logits [T, V]): the oldest path
  flash: `curation.jvp_attention` (Triton kernel on CUDA, the PyTorch reference elsewhere), the
         LM head still PyTorch's
  fused: flash attention and `curation.jvp_linear_ce` (the head's tangent through g W and g dW with
         g = softmax - onehot from one compiled pass on CUDA; no tangent logits)
  body : fused, and `curation.jvp_rules` for the model's norms, RoPE and SwiGLU (primal and tangent
         each one compiled function on CUDA): today's default

Each path runs the batches of --batches in increasing order until one runs out of memory; its
fastest batch is its figure; a path that fails otherwise is recorded with its error and the others
go on. Each path's scores on the largest batch all fit must agree with math's: max |path - math| /
max |math| <= --tolerance (else, or when a path failed, the JSON is written and the exit code is 1).
Warm-up passes are untimed; CUDA is synchronised around the timed ones. The kernel's launch
constants can be overridden (--block-m, --block-n, --warps, --stages) to tune it on a GPU, and
--profile N adds each path's top N CUDA kernels (one pass at that common batch) to the output.

    python benchmarks/influence_jvp.py --profile 20                      # CUDA: 140m, T 2048
    python benchmarks/influence_jvp.py --device cpu --preset tiny --seq 128 --threads 1 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import time
import traceback
from typing import Any

import torch

from influence_throughput import free as release
from influence_throughput import sync
from kernel_profile import print_kernels, top_kernels
from mobilellm_r1.curation import jvp_attention
from mobilellm_r1.curation.influence import jvp_scores, pad_batch, probe_gradient, select_params
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.train.metrics import measure_peak_flops, mfu_both, vendor_peak_flops
from provenance import dated_result, result_header, write_result

PATHS = {  # name -> jvp_scores settings
    "math": {"jvp_attention": False, "jvp_head": False, "jvp_body": False},
    "flash": {"jvp_attention": True, "jvp_head": False, "jvp_body": False},
    "fused": {"jvp_attention": True, "jvp_head": True, "jvp_body": False},
    "body": {"jvp_attention": True, "jvp_head": True, "jvp_body": True},
}
BASELINE = "19.6 samples/s: 140M, T 2048, k1, subset all, bf16 autocast, batch 32, H100 (README, Nov 2026)"
# a JVP pass computes the primal forward and the tangent (two products per weight), as forward +
# backward do; the K > 1 queries add tangents that this count leaves out
FLOP_FORMULA = "3 x forward matmul FLOPs per token (ModelConfig.flops_per_token(seq)['train'])"


def free(device: torch.device) -> None:
    """Release cached memory (`influence_throughput.free`) and restart the peak-memory count."""
    release(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def random_rows(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (n, length), generator=gen).tolist()


def time_path(score, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``score()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        score()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        score()
    sync(device)
    return (time.perf_counter() - start) / iters


def path_scores(model, params, queries, ids, labels, args, how: dict) -> torch.Tensor:
    """One scoring pass of `jvp_scores` with one path's settings (`PATHS`)."""
    return jvp_scores(model, params, queries, ids, labels, autocast_dtype=args.autocast, **how)


def sweep(model, params, queries, rows, args, device: torch.device) -> dict[str, list[dict]]:
    """Per path: one record per batch tried (time, rates, peak memory), up to the first OOM."""
    out: dict[str, list[dict]] = {}
    for name, how in PATHS.items():
        out[name] = []
        for batch in args.batches:
            free(device)
            ids, labels = pad_batch(rows[:batch], device=device)

            def score(ids=ids, labels=labels, how=how) -> torch.Tensor:
                return path_scores(model, params, queries, ids, labels, args, how)

            try:
                seconds = time_path(score, device, args.warmup, args.iters)
            except torch.OutOfMemoryError as err:
                out[name].append(
                    {"batch": batch, "error": "out of memory: " + str(err).splitlines()[0][:160]}
                )
                break
            except Exception as err:  # a path that fails (e.g. to compile) is recorded, the others run
                traceback.print_exc()
                out[name].append({"batch": batch, "error": f"{type(err).__name__}: {str(err)[:300]}"})
                break
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            record = {"batch": batch, "pass_s": seconds, "samples_per_s": batch / seconds}
            tps = batch * args.seq / seconds
            out[name].append(
                {**record, "tokens_per_s": tps, "peak_mem_gib": peak, **mfu_both(tps * args.fpt, *args.peaks)}
            )
            print(f"{name:>5} batch {batch:>4}: {batch / seconds:9.2f} samples/s", flush=True)
    return out


def agreement(model, params, queries, rows, batch: int, names, args, device: torch.device) -> dict[str, Any]:
    """Scores [K, batch] of each path of ``names`` (math first) on the same rows against math's: per
    path max |path - math| / max |math| and the correlation; agree when every path is within
    --tolerance."""
    free(device)
    ids, labels = pad_batch(rows[:batch], device=device)
    scores = {
        name: path_scores(model, params, queries, ids, labels, args, PATHS[name]).double().cpu()
        for name in names
    }
    old = scores["math"]
    paths = {}
    for name, new in scores.items():
        if name == "math":
            continue
        rel = float((new - old).abs().max() / old.abs().max().clamp(min=1e-30))
        flat = torch.stack([new.flatten(), old.flatten()])
        corr = float(torch.corrcoef(flat)[0, 1]) if old.numel() > 1 else 1.0
        paths[name] = {"max_rel_diff": rel, "corr": corr, "agree": rel <= args.tolerance}
    return {"batch": batch, "paths": paths, "agree": all(p["agree"] for p in paths.values())}


def profile_paths(model, params, queries, rows, batch: int, names, args, device: torch.device) -> dict | None:
    """Per path of ``names``, the top --profile kernels of one scoring pass at `batch` (CUDA only)."""
    if device.type != "cuda" or not batch:
        return None
    out = {}
    for name in names:
        how = PATHS[name]
        free(device)
        ids, labels = pad_batch(rows[:batch], device=device)
        out[name] = top_kernels(
            lambda ids=ids, labels=labels, how=how: path_scores(
                model, params, queries, ids, labels, args, how
            ),
            top=args.profile,
        )
        out[name]["batch"] = batch
        print(f"\n{name} path, batch {batch}:")
        print_kernels(out[name])
    return out


def best(records: list[dict]) -> dict | None:
    return max((r for r in records if "samples_per_s" in r), key=lambda r: r["samples_per_s"], default=None)


def table(result: dict) -> None:
    print(
        f"\n{'path':>6} {'batch':>6} {'samples/s':>10} {'tokens/s':>10} {'peak GiB':>9} {'MFU':>6} {'vendor':>6}"
    )
    for name in PATHS:
        r = result["best"][name]
        if r is None:
            print(f"{name:>6} {'-':>6} {'no batch fits':>10}")
            continue
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        mfu = [f"{r[k]:.1%}" if r[k] is not None else "-" for k in ("mfu", "mfu_vendor")]
        print(
            f"{name:>6} {r['batch']:>6} {r['samples_per_s']:>10.2f} {r['tokens_per_s']:>10.0f} {mem:>9} {mfu[0]:>6} {mfu[1]:>6}"
        )
    for key, ratio in result["ratios"].items():
        print(f"ratio {key.replace('_over_', ' / ')}: " + (f"{ratio:.2f}x" if ratio else "-"))
    a = result["agreement"]
    for name, p in (a or {}).get("paths", {}).items():
        verdict = "agree" if p["agree"] else f"DISAGREE (tolerance {result['config']['tolerance']})"
        print(
            f"{name} vs math at batch {a['batch']}: max rel diff {p['max_rel_diff']:.2e}, "
            f"corr {p['corr']:.6f}: {verdict}"
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="140m")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batches", type=int, nargs="+", default=None, help="increasing; CUDA 8..128, CPU 2 4")
    p.add_argument("--subset", default="all", help="select_params subset")
    p.add_argument("--queries", type=int, default=1, help="K probe-gradient queries per pass (vmapped)")
    p.add_argument("--probe-rows", type=int, default=2, help="random probing rows per query")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", choices=["bf16", "none"], default=None, help="default: bf16 on CUDA only")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--tolerance", type=float, default=None, help="default 0.05 with bf16, 1e-4 without")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--block-m", type=int, default=jvp_attention.BLOCK_M)
    p.add_argument("--block-n", type=int, default=jvp_attention.BLOCK_N)
    p.add_argument("--warps", type=int, default=jvp_attention.NUM_WARPS)
    p.add_argument("--stages", type=int, default=jvp_attention.NUM_STAGES)
    p.add_argument("--profile", type=int, default=0, help="CUDA: the top N kernels of one pass per path")
    p.add_argument("--out", default=None, help="default benchmarks/results/influence_jvp_<date>.json")
    args = p.parse_args()
    device = torch.device(args.device)
    bf16 = args.autocast == "bf16" or (args.autocast is None and device.type == "cuda")
    args.autocast = torch.bfloat16 if bf16 else None
    args.tolerance = args.tolerance if args.tolerance is not None else (0.05 if bf16 else 1e-4)
    args.batches = args.batches or ([8, 16, 32, 64, 128] if device.type == "cuda" else [2, 4])
    if sorted(args.batches) != args.batches or args.batches[0] < 1:
        p.error(f"--batches must be positive and increasing, got {args.batches}")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    launch = dict(BLOCK_M=args.block_m, BLOCK_N=args.block_n, NUM_WARPS=args.warps, NUM_STAGES=args.stages)
    for name, value in launch.items():
        setattr(jvp_attention, name, value)
    model = build_model(preset(args.preset), device=device, seed=0).eval()
    args.fpt = model.config.flops_per_token(args.seq)["train"]
    args.peaks = (measure_peak_flops(device), vendor_peak_flops(device))
    vocab = model.config.vocab_size
    params = select_params(model, args.subset)
    probes = [random_rows(args.probe_rows, args.seq, vocab, seed=10 + i) for i in range(args.queries)]
    queries = [probe_gradient(model, rows, params) for rows in probes]
    rows = random_rows(args.batches[-1], args.seq, vocab, seed=1)
    records = sweep(model, params, queries, rows, args, device)
    bests = {name: best(r) for name, r in records.items()}
    names = [name for name, record in bests.items() if record is not None]  # paths that ran
    fits = [max(r["batch"] for r in records[name] if "samples_per_s" in r) for name in names]
    common = min(fits) if "math" in names else 0
    agree = agreement(model, params, queries, rows, common, names, args, device) if common else None
    pairs = {
        "flash_over_math": ("flash", "math"),
        "fused_over_flash": ("fused", "flash"),
        "body_over_fused": ("body", "fused"),
        "body_over_math": ("body", "math"),
    }
    ratios = {
        key: bests[a]["samples_per_s"] / bests[b]["samples_per_s"] if bests[a] and bests[b] else None
        for key, (a, b) in pairs.items()
    }
    profiles = (
        profile_paths(model, params, queries, rows, common, names, args, device) if args.profile else None
    )
    config = {**vars(args), "autocast": str(args.autocast), "launch": launch, "flop_formula": FLOP_FORMULA}
    config["params"] = sum(p.numel() for p in model.parameters())
    result = {
        **result_header("influence_jvp", device.type),
        "config": config,
        "baseline_reference": BASELINE,
        "sweep": records,
        "best": bests,
        "agreement": agree,
        "ratios": ratios,
        "profile": profiles,
    }
    out = args.out or dated_result(f"influence_jvp_{args.preset}")
    write_result(result, out)
    table(result)
    if agree is None or not agree["agree"] or len(names) < len(PATHS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
