"""On-device CPU speed, the paper's Table 10 on this machine: 140M / 360M / 950M through
ExecuTorch (.pte, 8da4w, with a float32 or an int8 KV cache), llama.cpp (GGUF q4_0 and q4_k_m, via llama-cpp-python) and our
PyTorch engine (bf16), batch 1, all threads of this machine (or --threads).

For each size the long-context (32k) preset is initialised randomly (speed does not depend on
the values; the parity of the exported files with the model is tested and measured on a
trained model by benchmarks/export_parity.py), saved, and exported with `mobilellm-r1 export`
(export time and file size recorded). Each route then runs in a fresh subprocess (its peak RSS
is that process's): one growing sequence is prefilled up to each context C in turn, and at C,
`--decode` greedy tokens are decoded:
  * decode_tok_s[C]  = decode tokens / their wall time, the cache holding ~C tokens;
  * prefill_tok_s    = the first chunk (C = the smallest context) / its wall time.
Our engine is stepped the same way (`TorchRuntime`: the model in bf16 with its KV cache, eager,
the `Generator`'s batch-1 decode math).
The memory-bandwidth floor: read bandwidth of this machine (a large tensor summed by all
threads, best of 5) over the bytes one decode step must read at least: int4 weights of every
linear layer including the tied LM head (4.5 bits per weight with a scale per group of 32)
plus the f16 KV cache at C.

    python benchmarks/ondevice_cpu.py                              # everything (~1-2 h on 2 cores)
    python benchmarks/ondevice_cpu.py --sizes 140m --routes gguf-q4_0 --contexts 1024,2048

Writes benchmarks/results/ondevice_cpu_<date>.json (exports cached under --work) and prints a
table last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from mobilellm_r1.atomic import atomic_write
from mobilellm_r1.deploy.generate import CACHE_BUCKET
from provenance import dated_result, result_header, write_result

ROUTES = {  # name -> (format, quant, pte KV cache); None: our PyTorch engine in bf16
    "pte-8da4w": ("pte", "8da4w", "fp32"),
    "pte-8da4w-kv8": ("pte", "8da4w", "int8"),
    "gguf-q4_0": ("gguf", "q4_0", "fp32"),
    "gguf-q4_k_m": ("gguf", "q4_k_m", "fp32"),
    "torch-bf16": None,
}
CONTEXTS = {
    "140m": (1024, 2048, 4096, 8192, 16384, 32768),
    "360m": (1024, 2048, 4096, 8192),
    "950m": (1024, 2048, 4096, 8192),
}
# MobileLLM-R1 paper, Table 10: Samsung Galaxy S22, ExecuTorch 8da4w, decode tok/s by context.
PAPER_S22 = {"140m": {1024: 129.7, 32768: 79.7}, "360m": {1024: 77.2}, "950m": {1024: 31.1}}
PREFILL_CHUNK = 2048  # tokens per forward of our engine's prefill
BITS_PER_INT4_WEIGHT = 4.5  # 4 bits + a 16-bit scale per group of 32


# ------------------------------------------------------------------------------ measuring
def read_bandwidth_gbs(gib: float = 1.0, repeats: int = 5) -> float:
    """Best read bandwidth (GB/s) of summing a `gib`-GiB float32 tensor with torch's threads."""
    x = torch.ones(int(gib * 2**30) // 4)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


def floor_bytes_per_token(size: str, context: int) -> float:
    """Bytes a decode step reads at least: int4 linear weights (+ tied head) and the f16 KV cache."""
    from mobilellm_r1.model import preset

    cfg = preset(size, long_context=True)
    linear = cfg.num_params(include_embedding=False) + cfg.vocab_size * cfg.hidden_size
    return linear * BITS_PER_INT4_WEIGHT / 8 + cfg.kv_cache_bytes_per_token(2) * context


def peak_rss_mib() -> float:
    """This process's peak resident set (MiB): Linux's VmHWM, which starts afresh at execve.
    (ru_maxrss survives execve, so a worker started right after the parent exported a 950M
    model would report the parent's peak.) ru_maxrss where /proc is absent."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_ids(n: int, seed: int) -> list[int]:
    """n ids of ordinary (non-special) tokens."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 100_000, (n,), generator=g).tolist()


def run_file_route(path: Path, contexts: list[int], decode: int, threads: int) -> dict:
    """Grow one sequence through an exported file's runtime (see module docstring)."""
    from mobilellm_r1.deploy.formats import format_of_path

    return grow(format_of_path(path).load().open_runtime(path, threads=threads), contexts, decode)


def grow(runtime, contexts: list[int], decode: int) -> dict:
    """Prefill one sequence up to each context C - decode in turn, then time `decode` greedy
    steps at C; the first chunk's rate is the prefill rate. `runtime.forward(ids, start)` gives
    the last position's logits."""
    ids = random_ids(max(contexts), 0)
    pos, out = 0, {"decode_tok_s": {}}
    for c in contexts:
        chunk = ids[pos : c - decode]
        start = time.perf_counter()
        logits = runtime.forward(chunk, pos)
        if "prefill_tok_s" not in out:
            out["prefill_tok_s"] = len(chunk) / (time.perf_counter() - start)
            out["prefill_tokens"] = len(chunk)
        pos = c - decode
        start = time.perf_counter()
        for _ in range(decode):
            tok = int(logits.argmax())
            logits = runtime.forward([tok], pos)
            pos += 1
        out["decode_tok_s"][c] = decode / (time.perf_counter() - start)
    return out


class TorchRuntime:
    """Our model in bf16 with its KV cache, stepped like the file runtimes. As in `Generator`,
    attention reads the cache up to the filled length rounded up to `CACHE_BUCKET` slots."""

    def __init__(self, model_dir: Path, max_len: int, dtype: str = "bfloat16") -> None:
        from mobilellm_r1.model.hf import load_checked
        from mobilellm_r1.model.model import KVCache

        self.model = load_checked(model_dir, device="cpu", dtype=dtype)[0].eval()
        weights = next(self.model.parameters()).dtype
        self.cache = KVCache(self.model.config, 1, max_len, device="cpu", dtype=weights)

    @torch.inference_mode()
    def forward(self, ids: list[int], start: int) -> torch.Tensor:
        """Last position's logits after `ids` at cache slots start..; a long prompt goes in chunks
        of PREFILL_CHUNK (the [chunk, width] attention mask of one 32k prompt would not fit)."""
        for lo in range(0, len(ids), PREFILL_CHUNK):
            logits = self._chunk(ids[lo : lo + PREFILL_CHUNK], start + lo)
        return logits

    def _chunk(self, ids: list[int], start: int) -> torch.Tensor:
        slots = torch.arange(start, start + len(ids))
        width = min(self.cache.max_len, -(-(start + len(ids)) // CACHE_BUCKET) * CACHE_BUCKET)
        # [1, 1, n, width]: each new token sees the cache up to itself; None: causal prefill from 0
        mask = None if start == 0 else (torch.arange(width)[None, :] <= slots[:, None])[None, None]
        logits = self.model(
            torch.tensor([ids]),
            slots[None],
            cache=self.cache,
            cache_pos=slots,
            attn_mask=mask,
            last_only=True,
        )
        return logits[0, -1].float()


def run_torch_route(model_dir: Path, contexts: list[int], decode: int, threads: int) -> dict:
    """Our model in bf16, eager, batch 1 (the `Generator`'s decode math), grown like the files."""
    torch.set_num_threads(threads)
    runtime = TorchRuntime(model_dir, max(contexts))
    runtime.forward(random_ids(64, 1), 0)  # warm-up
    return grow(runtime, contexts, decode)


def worker(args: argparse.Namespace) -> None:
    """One route of one size in this (fresh) process; prints one JSON line."""
    contexts = [int(c) for c in args.contexts.split(",")]
    if args.route == "torch-bf16":
        result = run_torch_route(Path(args.target), contexts, args.decode, args.threads)
    else:
        result = run_file_route(Path(args.target), contexts, args.decode, args.threads)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# ------------------------------------------------------------------------------ driving
def checkpoint(size: str, work: Path) -> Path:
    """A random long-context model of this size, saved once under `work`."""
    from mobilellm_r1.model import build_model, preset
    from mobilellm_r1.model.hf import save_pretrained
    from mobilellm_r1.tokenizer import load_tokenizer

    target = work / f"{size}-random"
    if not (target / "config.json").exists():
        model = build_model(preset(size, long_context=True), seed=0, dtype=torch.bfloat16)
        save_pretrained(model, load_tokenizer(), target)
    return target


def export(size: str, route: str, model_dir: Path, work: Path, max_context: int) -> tuple[Path, float | None]:
    """The route's exported file (cached under `work`) and the export's seconds: measured now, or
    read from the `<file>.export.json` written beside the file when it was made (None: unknown)."""
    fmt, quant, kv_cache = ROUTES[route]
    kv = "" if kv_cache == "fp32" else f"-kv{kv_cache}"
    out = work / f"{size}-{quant}{kv}-ctx{max_context}.{fmt}"
    timing = out.with_name(out.name + ".export.json")
    if out.exists():
        return out, json.loads(timing.read_text())["export_s"] if timing.exists() else None
    cmd = ["mobilellm-r1", "export", "--model", str(model_dir), "--out", str(out), "--quant", quant]
    cmd += ["--kv-cache", kv_cache] if kv else []
    start = time.perf_counter()
    subprocess.run([*cmd, "--max-context", str(max_context)], check=True)
    seconds = time.perf_counter() - start
    atomic_write(timing, json.dumps({"export_s": seconds}))
    return out, seconds


def measure(size: str, route: str, target: Path, contexts: list[int], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--route", route, "--target", str(target)]
    cmd += ["--contexts", ",".join(map(str, contexts)), "--decode", str(args.decode)]
    cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    contexts = sorted({int(c) for r in result["rows"] for c in r["decode_tok_s"]})
    labels = [f"{c // 1024}k" if c % 1024 == 0 else str(c) for c in contexts]
    head = ["size", "route", "file MiB", "export s", "prefill tok/s", *labels, "peak RSS MiB"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in result["rows"]:
        dec = [f"{r['decode_tok_s'][str(c)]:.1f}" if str(c) in r["decode_tok_s"] else "" for c in contexts]
        size = f"{r['file_mib']:.0f}" if r.get("file_mib") else ""
        secs = f"{r['export_s']:.0f}" if r.get("export_s") else ""
        lines.append(
            " | ".join(
                [
                    r["size"],
                    r["route"],
                    size,
                    secs,
                    f"{r['prefill_tok_s']:.0f}",
                    *dec,
                    f"{r['peak_rss_mib']:.0f}",
                ]
            )
        )
    sizes = {r["size"] for r in result["rows"]}
    for size, row in PAPER_S22.items():
        if size not in sizes:
            continue
        dec = [f"{row[c]:.1f}" if c in row else "" for c in contexts]
        lines.append(" | ".join([size, "paper S22 8da4w", "", "", "", *dec, ""]))
    for size, floor in result["floor_tok_s"].items():
        dec = [f"{floor[str(c)]:.0f}" if str(c) in floor else "" for c in contexts]
        lines.append(" | ".join([size, "int4 bandwidth floor", "", "", "", *dec, ""]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="140m,360m,950m")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--contexts", default=None, help="comma-separated (default: per size, see CONTEXTS)")
    parser.add_argument("--decode", type=int, default=32, help="tokens decoded at each context")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path("/tmp/ondevice_cpu"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--export-only", action="store_true", help="write (cache) the files, measure nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--route", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    bandwidth = read_bandwidth_gbs()
    result = result_header("ondevice_cpu", device="cpu") | {
        "threads": args.threads,
        "decode_tokens": args.decode,
        "read_bandwidth_gbs": bandwidth,
        "paper_s22_decode_tok_s": PAPER_S22,
        "floor_tok_s": {},
        "rows": [],
    }
    out = args.out or dated_result("ondevice_cpu")
    for size in args.sizes.split(","):
        contexts = [int(c) for c in args.contexts.split(",")] if args.contexts else list(CONTEXTS[size])
        result["floor_tok_s"][size] = {c: bandwidth * 1e9 / floor_bytes_per_token(size, c) for c in contexts}
        model_dir = checkpoint(size, args.work)
        for route in args.routes.split(","):
            row: dict = {"size": size, "route": route}
            target = model_dir
            if ROUTES[route] is not None:
                target, row["export_s"] = export(size, route, model_dir, args.work, max(contexts))
                row["file_mib"] = target.stat().st_size / 2**20
            if args.export_only:
                print(json.dumps(row), flush=True)
                continue
            row |= measure(size, route, target, contexts, args)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            write_result(json.loads(json.dumps(result)), out, quiet=True)  # keys as strings, as read back
    if args.export_only:
        return
    result = json.loads(json.dumps(result))
    write_result(result, out)
    print(table(result))


if __name__ == "__main__":
    main()
