"""Influence-scoring throughput (MobileLLM-R1 Eq. 2-5) on one GPU and over N, and the GPU-hours it projects
for the paper's influence run.

One process: a sweep of the forward-mode JVP scores (``influence.jvp_scores``) of synthetic rows of exactly
``--seq-len`` tokens on the 140M preset (random init, or ``--model DIR``) over parameter subsets
(``select_params``: all, last:k, embeddings), bf16 autocast on / off, queries per pass (k1: one capability;
k3: code + math + knowledge in one vmapped pass; k3loop: one pass each) and batch sizes (the first OOM ends
a configuration; ``--max-minutes`` skips what is left).  Warm-up passes are untimed, CUDA is synchronised
around the timed ones.  Also timed: the queries (three probe gradients, once per checkpoint) and the
end-to-end runner (``InfluenceScorer``: JSONL in, parquet out).

Under ``torchrun --nproc-per-node N``: rank 0 first times the runner alone (or takes that figure from
``--baseline-json``), then all ranks run it data-parallel (chunk i on rank i % N).  Model build, queries and
one warm-up chunk per rank are timed apart; aggregate samples/s = all samples / slowest rank's seconds;
scaling efficiency = aggregate / N / the 1-GPU figure.

Projection: GPU-hours = samples x capabilities x checkpoints / (scores/s) / 3600 at the paper's counts
(``PAPER``, with sources), against the 6,800 GPU-hours it reports.

    python benchmarks/influence_throughput.py --out $OUT/influence_throughput_h100.json
    torchrun --standalone --nproc-per-node 8 benchmarks/influence_throughput.py --out $OUT/dp.json
    python benchmarks/influence_throughput.py --smoke --out /tmp/influence_smoke.json   # CPU check
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mobilellm_r1.atomic import atomic_write
from mobilellm_r1.curation.influence import CHUNK_TOKENS, jvp_scores, pad_batch, probe_gradient, select_params
from mobilellm_r1.curation.influence_run import Checkpoint, InfluenceConfig, InfluenceScorer
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.hf import dtype_from_name, load_pretrained
from provenance import result_header, write_result

CAPABILITIES = ("code", "math", "knowledge")
PAPER = {
    "source": "arXiv 2509.24945 (MobileLLM-R1), v2 text; the cost from v3 Appendix D.3",
    "corpora": 14,  # Table 3: the pre-training datasets whose representative subsets are scored
    "samples_per_corpus": 10_000,  # Sec. 5.1.1: each Table 3 dataset shrunk to ~10,000 examples
    "samples": 140_000,  # 14 x 10,000 representative samples (Sec. 5.2 scores these, not the corpora)
    "capabilities": 3,  # Sec. 5.2: Code, Math, Knowledge probing sets, one domain model theta_{c,t} each
    "checkpoints_per_capability": 10,  # Sec. 5.2: T = 10 evenly spaced checkpoints (Eq. 5)
    "seq_len": 2048,  # Table 2: pre-training sequence length 2k (samples assumed cut to it)
    "reported_gpu_hours": 6_800,
    "reported_gpu_hours_covers": "representative-set construction + influence computation + the "
    "leave-one-out pre-training ablations together (v3 App. D.3, as summarised in secondary sources; "
    "model training another ~38,600); so influence alone took at most 6,800",
    "not_counted": "mid-training co-evolution (Sec. 6, Eq. 7) scores the mid-training pool at each stage "
    "with one model; the paper gives no sample count for it",
}
SMOKE_MODEL = {"vocab_size": 512, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": [2]}


# ====================================================================== setup
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def build(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    dtype = dtype_from_name(args.dtype)
    if args.model:
        return load_pretrained(args.model, device=device, dtype=dtype)[0].eval()
    cfg = preset(args.preset, **(SMOKE_MODEL if args.smoke else {}))
    return build_model(cfg, device=device, dtype=dtype, seed=0).eval()


def random_rows(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (n, length), generator=g).tolist()


class IdTokenizer:
    """The generated JSONL's texts are space-separated token ids; BOS is prepended on request."""

    def __init__(self, bos: int) -> None:
        self.bos = bos

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return ([self.bos] if bos else []) + [int(t) for t in text.split()]


def id_texts(n: int, length: int, vocab: int, seed: int) -> list[str]:
    return [" ".join(map(str, row)) for row in random_rows(n, length, vocab, seed)]


# ====================================================================== one-GPU sweep
def timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def point(cfg: tuple[str, bool, str], batch: int) -> dict[str, Any]:
    return {"subset": cfg[0], "bf16_autocast": cfg[1], "mode": cfg[2], "batch": batch}


def bench(model, params, queries, rows, cfg: tuple[str, bool, str], batch: int, args, device) -> dict:
    """One (subset, autocast, mode, batch) point: samples/s, tokens/s, scores/s, peak memory."""
    _, autocast, mode = cfg
    qs = queries[:1] if mode == "k1" else queries
    row = point(cfg, batch)
    ids, labels = pad_batch(rows[:batch], device=device)
    fn = partial(
        jvp_scores, model, params, qs, ids, labels, chunk_tokens=args.chunk_tokens, vmap_queries=mode == "k3"
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = None
    try:
        seconds = timed(
            partial(fn, autocast_dtype=torch.bfloat16 if autocast else None), device, args.warmup, args.iters
        )
    except torch.OutOfMemoryError as err:
        oom = str(err).splitlines()[0][:160]
    free(device)
    if oom is not None:
        return {**row, "error": f"out of memory: {oom}"}
    rate = batch / seconds
    return {
        **row,
        "pass_s": seconds,
        "samples_per_s": rate,
        "tokens_per_s": rate * args.seq_len,
        "scores_per_s": rate * len(qs),
        "peak_mem_gib": peak_gib(device),
    }


def sweep(model, args, device, log: Callable[[dict], None]) -> tuple[list[dict], list[dict]]:
    """The JVP sweep (subset by subset, bf16 first) and the per-checkpoint query cost of each subset."""
    vocab = model.config.vocab_size
    rows = random_rows(max(args.batches), args.seq_len, vocab, seed=1)
    probes = [random_rows(args.probe_rows, args.seq_len, vocab, seed=10 + i) for i in range(3)]
    deadline = time.monotonic() + 60 * args.max_minutes
    results, costs = [], []
    probe_gradient(model, probes[0][:1], select_params(model, "all"))  # CUDA / cuBLAS warm-up, untimed
    for subset in args.subsets:
        params = select_params(model, subset)
        sync(device)
        start = time.perf_counter()
        queries = [probe_gradient(model, p, params) for p in probes]  # one query per capability
        sync(device)
        cost = {"subset": subset, "params": sum(p.numel() for p in params.values())}
        costs.append({**cost, "query_s_per_checkpoint": time.perf_counter() - start})
        log({"query": costs[-1]})
        for cfg in itertools.product([subset], (True, False), args.modes):
            for batch in args.batches:
                if time.monotonic() > deadline:
                    results.append({**point(cfg, batch), "skipped": f"--max-minutes {args.max_minutes}"})
                    continue
                results.append(bench(model, params, queries, rows, cfg, batch, args, device))
                log(results[-1])
                if "error" in results[-1]:
                    break
        del params, queries
        free(device)
    return results, costs


def best_rows(rows: list[dict]) -> list[dict]:
    """The fastest batch of each (subset, autocast, mode)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["subset"], r["bf16_autocast"], r["mode"])
        if "samples_per_s" in r and r["samples_per_s"] > best.get(key, {}).get("samples_per_s", 0):
            best[key] = r
    return list(best.values())


def fastest(rows: list[dict], subset: str, mode: str) -> dict | None:
    candidates = [r for r in rows if r["subset"] == subset and r["mode"] == mode]
    return max(candidates, key=lambda r: r["samples_per_s"], default=None)


# ====================================================================== InfluenceScorer (1 or N GPUs)
def write_samples(path: Path, ranks: int, args, vocab: int, batch: int) -> Path:
    """JSONL of (1 warm-up + --chunks-per-rank) chunks per rank, rows of --seq-len tokens with BOS."""
    n = ranks * (1 + args.chunks_per_rank) * (args.chunk_size or 4 * batch)
    texts = id_texts(n, args.seq_len - 1, vocab, seed=2)
    lines = [json.dumps({"id": f"s{i}", "text": t}) for i, t in enumerate(texts)]
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def run_scorer(model, args, device, samples: Path, out: Path, batch: int) -> dict:
    """Warm-up run (queries + one chunk per rank, timed apart) then the resumed, timed run."""
    vocab = model.config.vocab_size
    probes = {
        c: id_texts(args.probe_rows, args.seq_len - 1, vocab, 10 + i) for i, c in enumerate(CAPABILITIES)
    }
    chunk, subset = args.chunk_size or 4 * batch, args.subsets[0]
    cfg = InfluenceConfig(args.seq_len, batch, chunk, subset, bf16=True, device=str(device))
    scorer = InfluenceScorer(
        [Checkpoint("t1", 1, model)], probes, IdTokenizer(model.config.bos_token_id), cfg
    )
    start = time.perf_counter()
    scorer.run(samples, out, max_chunks=1)
    sync(device)
    warm = time.perf_counter() - start
    if dist.is_initialized():
        dist.barrier()
    res = scorer.run(samples, out)
    timed_run = {k: res[k] for k in ("samples_scored", "seconds", "samples_per_s")}
    # setup_s: queries + one chunk per rank (+ CUDA warm-up), not in samples_per_s (3 capabilities a pass)
    return {
        "batch": batch,
        "chunk_size": cfg.chunk_size,
        "setup_s": warm,
        **timed_run,
        "peak_mem_gib": peak_gib(device),
    }


def data_parallel(model, args, device, work: Path, batch: int) -> dict:
    """Rank 0 times the runner alone (unless --baseline-json), then all ranks run it sharded."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    baseline: dict = {}
    if rank == 0:
        shutil.rmtree(work, ignore_errors=True)
        write_samples(work / "dp.jsonl", world, args, model.config.vocab_size, batch)
        if args.baseline_json:
            baseline = baseline_from(args.baseline_json)
        else:
            solo = write_samples(work / "solo.jsonl", 1, args, model.config.vocab_size, batch)
            baseline = run_scorer(model, args, device, solo, work / "solo", batch)
    backend = "nccl" if device.type == "cuda" else "gloo"
    device_id = device if device.type == "cuda" else None  # ranks > 0 wait here for rank 0's solo run
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), device_id=device_id)
    dist.barrier()  # rank 0 has written the samples (and timed the solo run)
    mine = run_scorer(model, args, device, work / "dp.jsonl", work / "dp", batch)
    ranks: list[Any] = [None] * world
    dist.all_gather_object(ranks, mine)
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return {}
    scored, slowest = sum(r["samples_scored"] for r in ranks), max(r["seconds"] for r in ranks)
    aggregate = scored / slowest
    return {
        "world": world,
        "baseline_1gpu": baseline,
        "per_rank": ranks,
        "samples_scored": scored,
        "seconds_slowest_rank": slowest,
        "aggregate_samples_per_s": aggregate,
        "per_gpu_samples_per_s": aggregate / world,
        "scaling_efficiency": aggregate / world / baseline["samples_per_s"],
    }


def baseline_from(path: str) -> dict:
    result = json.loads(Path(path).read_text())
    if not result.get("scorer"):
        raise ValueError(f"{path}: no 'scorer' section (run the script without torchrun first)")
    return {**result["scorer"], "from": path, "machine": result["machine"]}


# ====================================================================== projection and report
def project(row: dict, k: int, n_gpus: int = 1, query_s: float | None = None) -> dict:
    """GPU-hours of Eq. 3-5 at the paper's counts from a per-GPU rate of samples scored against ``k``
    capabilities a pass: k = 1 is the paper's layout (one domain model per capability and checkpoint),
    k = 3 ours (one model per checkpoint, the three queries in one pass).  ``query_s``: the three
    probe gradients of one checkpoint."""
    n, caps, ckpts = PAPER["samples"], PAPER["capabilities"], PAPER["checkpoints_per_capability"]
    passes = n * caps * ckpts / k
    queries_h = caps * ckpts * (query_s or 0.0) / len(CAPABILITIES) / 3600
    hours = passes / row["samples_per_s"] / 3600 + queries_h
    keys = ("subset", "bf16_autocast", "mode", "batch")
    return {
        "per_gpu_samples_per_s": row["samples_per_s"],
        "capabilities_per_pass": k,
        "measured": {key: row[key] for key in keys if key in row},
        "counts": {"samples": n, "capabilities": caps, "checkpoints": ckpts, "passes": passes},
        "query_gpu_hours": queries_h,
        "gpu_hours": hours,
        "wall_hours_on_n_gpus": hours / n_gpus,
        "n_gpus": n_gpus,
        "fraction_of_reported_6800": hours / PAPER["reported_gpu_hours"],
        "samples_scorable_in_6800_gpu_hours": PAPER["reported_gpu_hours"] * n / hours,
    }


def projections(
    best: list[dict], queries: list[dict], scorer: dict | None, dp: dict | None, first: str
) -> dict:
    """Projections from the sweep's fastest k1 / k3 rates (subset ``first``), the runner and N GPUs."""
    query_s = next((q["query_s_per_checkpoint"] for q in queries if q["subset"] == first), None)
    out = {}
    for name, mode, k in (("paper_layout_k1", "k1", 1), ("shared_layout_k3", "k3", 3)):
        row = fastest(best, first, mode)
        if row is not None:
            out[name] = project(row, k, query_s=query_s)
    if scorer:
        out["scorer_k3"] = project(scorer, 3)
    if dp:
        out["data_parallel_k3"] = project({"samples_per_s": dp["per_gpu_samples_per_s"]}, 3, dp["world"])
    return out


def table(result: dict) -> None:
    keys = ("subset", "bf16_autocast", "mode", "batch", "samples_per_s", "tokens_per_s", "scores_per_s")
    if result["best"]:
        print("\n" + " ".join(f"{k.replace('_per_s', '/s'):>13}" for k in (*keys, "peak_mem_gib")))
    for r in result["best"]:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else r[k] for k in (*keys, "peak_mem_gib")]
        print(" ".join(f"{c!s:>13}" for c in cells))
    for q in result["queries"]:
        print(f"queries (3 probing sets), {q['subset']}: {q['query_s_per_checkpoint']:.2f} s per checkpoint")
    if result["scorer"]:
        print(
            f"InfluenceScorer, 1 process: {result['scorer']['samples_per_s']:.2f} samples/s (3 capabilities)"
        )
    if dp := result["data_parallel"]:
        print(
            f"InfluenceScorer, {dp['world']} ranks: {dp['aggregate_samples_per_s']:.2f} samples/s, "
            f"{dp['per_gpu_samples_per_s']:.2f} per GPU, alone {dp['baseline_1gpu']['samples_per_s']:.2f}: "
            f"scaling efficiency {dp['scaling_efficiency']:.1%}"
        )
    for name, v in result["projection"].items():
        print(
            f"projection {name}: {v['gpu_hours']:,.1f} GPU-hours ({v['wall_hours_on_n_gpus']:,.1f} h on "
            f"{v['n_gpus']}) = {v['fraction_of_reported_6800']:.1%} of the paper's 6,800"
        )


def smoke_defaults(args: argparse.Namespace) -> None:
    """Tiny model on CPU: every code path in seconds."""
    args.preset, args.seq_len, args.batches, args.warmup, args.iters = "tiny", 32, [2, 4], 1, 1
    args.subsets, args.probe_rows = ["all", "last:1"], 2
    args.chunks_per_rank, args.chunk_size = 1, 4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="140m")
    p.add_argument("--model", default=None, help="HF directory instead of a random-init preset")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="parameter dtype")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--subsets", nargs="+", default=["all", "last:4", "embeddings"], help="first: headline")
    p.add_argument("--modes", nargs="+", default=["k1", "k3", "k3loop"], choices=["k1", "k3", "k3loop"])
    p.add_argument("--probe-rows", type=int, default=4, help="probing rows per capability")
    p.add_argument("--chunk-tokens", type=int, default=CHUNK_TOKENS, help="LM-head positions at a time")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=5.5, help="sweep time budget")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-scorer", action="store_true", help="skip the one-process InfluenceScorer run")
    p.add_argument("--scorer-batch", type=int, default=0, help="0: the sweep's best k3 batch, else 16")
    p.add_argument("--chunk-size", type=int, default=0, help="runner chunk (0: 4 x batch)")
    p.add_argument("--chunks-per-rank", type=int, default=3, help="timed chunks per rank")
    p.add_argument("--baseline-json", default=None, help="1-GPU figure from an earlier run (torchrun)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "influence_throughput"))
    p.add_argument("--log-jsonl", default=None, help="JSONL of every measurement, appended as it goes")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.smoke:
        smoke_defaults(args)
    return args


def main() -> None:
    args = parse_args()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available() and not args.smoke:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    def log(record: dict) -> None:
        if rank == 0:
            print(json.dumps(record), flush=True)
            if args.log_jsonl:
                Path(args.log_jsonl).parent.mkdir(parents=True, exist_ok=True)
                with open(args.log_jsonl, "a") as fh:
                    fh.write(json.dumps(record) + "\n")

    model = build(args, device)
    rows, queries = ([], []) if args.no_sweep or distributed else sweep(model, args, device, log)
    best = best_rows(rows)
    k3 = fastest(best, args.subsets[0], "k3")
    batch = args.scorer_batch or (k3["batch"] if k3 else 16)
    work = Path(args.workdir)
    scorer, dp = None, None
    if distributed:
        dp = data_parallel(model, args, device, work, batch)
        if rank != 0:
            return
        log({"data_parallel": dp})
    elif not args.no_scorer:
        shutil.rmtree(work, ignore_errors=True)
        solo = write_samples(work / "solo.jsonl", 1, args, model.config.vocab_size, batch)
        scorer = run_scorer(model, args, device, solo, work / "solo", batch)
        log({"scorer": scorer})
    shutil.rmtree(work, ignore_errors=True)
    launcher = f"torchrun --standalone --nproc-per-node {dp['world']}" if dp else "python"
    result = {
        **result_header("influence_throughput", device.type, launcher),
        "config": {**vars(args), "params": sum(p.numel() for p in model.parameters())},
        "paper": PAPER,
        "sweep": rows,
        "best": best,
        "queries": queries,
        "scorer": scorer,
        "data_parallel": dp,
        "projection": projections(
            best, queries, scorer or (dp or {}).get("baseline_1gpu"), dp, args.subsets[0]
        ),
    }
    write_result(result, args.out)
    table(result)


if __name__ == "__main__":
    main()
