"""Decode throughput: our `Generator` vs transformers `generate`, same weights, same run.

For every preset x batch size x prompt length, both engines continue random prompts of a
randomly initialised model (bf16 by default, on GPU and CPU alike) for a fixed number of new tokens
(stop tokens disabled). Reported per engine:
  * e2e_tok_s    = batch * new_tokens / wall time of the whole generate call (prefill included)
  * decode_tok_s = batch * (new_tokens - 1) / (wall time - prefill time), prefill time being
                   that of the same call with one new token
(each time the best of 3 calls, for both engines).
`bandwidth_fraction` (ours): the bytes a decode step reads (every weight once, plus each row's
KV cache at the mean context of the decode) x steps/s, over this device's read bandwidth,
measured once as the best of 5 sums over a 2 GiB tensor (`read_bandwidth_gb_s` in the JSON).
transformers variants: `dynamic` (default DynamicCache, no compile), `static` (StaticCache,
compile disabled) and `static_compiled` (StaticCache with transformers' own auto-compile);
`hf_best` is the best of those measured. Warm-up runs (which include compilation) are not timed.

    python benchmarks/decode_throughput.py --device cuda          # all presets, GPU
    python benchmarks/decode_throughput.py --device cpu --presets 140m --batches 1 --prompt-lens 128
    python benchmarks/decode_throughput.py --presets 140m 950m --batches 1 --prompt-lens 1024 \
        --step persistent --hf-variants          # batch 1, every layer in one persistent launch, ours only

Writes benchmarks/results/decode_<device>_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.fused_decode import STEP_MODES
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.hf import save_pretrained
from provenance import dated_result, result_header, write_result


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


REPEATS = 3


def _timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _best(fn, device: str, repeats: int = REPEATS) -> float:
    """Shortest of `repeats` timed calls (the prefill and the full call alike, so that a
    noisy prefill time cannot inflate the decode rate derived from their difference)."""
    return min(_timed(fn, device) for _ in range(repeats))


def _prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).tolist()


def _rates(batch: int, new_tokens: int, prefill: float, total: float) -> dict:
    """End-to-end and after-prefill tokens/s from a one-token call's time and a full call's."""
    return {
        "e2e_tok_s": batch * new_tokens / total,
        "decode_tok_s": batch * (new_tokens - 1) / max(total - prefill, 1e-9),
        "prefill_s": prefill,
        "total_s": total,
    }


def read_bandwidth(device: str, nbytes: int = 2 << 30) -> float:
    """Bytes/s of the best of 5 sums over an `nbytes` bf16 tensor (memory-bound reads)."""
    x = torch.ones(nbytes // 2, device=device, dtype=torch.bfloat16)
    x.sum()  # warm-up
    return nbytes / _best(x.sum, device, repeats=5)


def step_bytes(cfg, batch: int, context: float, elem: int) -> float:
    """Bytes one decode step reads: every weight once (the embedding table only if it is also
    the LM head) and each row's K and V at `context` cached tokens."""
    weights = cfg.num_params(include_embedding=True)
    if not cfg.tie_word_embeddings:  # the input table: one row per token, not the whole table
        weights -= cfg.vocab_size * cfg.hidden_size
    return weights * elem + batch * context * cfg.kv_cache_bytes_per_token(elem)


def bench_ours(model, prompts, new_tokens: int, device: str, compile: bool, fused_options: dict) -> dict:
    gen = Generator(model, compile=compile, fused_options=fused_options)
    full = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())
    first = SamplingParams(max_new_tokens=1, stop_token_ids=())
    gen.generate(prompts, full)  # warm-up: compiles and records graphs
    prefill = _best(lambda: gen.generate(prompts, first), device)
    total = _best(lambda: gen.generate(prompts, full), device)
    return _rates(len(prompts), new_tokens, prefill, total)


def bench_hf(hf, prompts, new_tokens: int, device: str, variant: str) -> dict:
    ids = torch.tensor(prompts, device=device)
    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        attention_mask=torch.ones_like(ids),
    )
    if variant == "static":
        kwargs.update(cache_implementation="static", disable_compile=True)
    elif variant == "static_compiled":
        kwargs.update(cache_implementation="static")
    else:
        kwargs.update(disable_compile=True)

    def run(n: int) -> None:
        out = hf.generate(ids, **{**kwargs, "max_new_tokens": n, "min_new_tokens": n})
        assert out.shape[1] == ids.shape[1] + n, out.shape

    run(new_tokens)  # warm-up (compiles for static_compiled)
    prefill = _best(lambda: run(1), device)
    total = _best(lambda: run(new_tokens), device)
    return _rates(len(prompts), new_tokens, prefill, total)


def run_config(name, batch, plen, args, model, hf) -> dict:
    cfg = model.config
    prompts = _prompts(batch, plen, cfg.vocab_size, seed=batch * 100_003 + plen)
    row = {"preset": name, "batch": batch, "prompt_len": plen, "new_tokens": args.new_tokens}
    options = STEP_MODES[args.step]
    row["ours"] = bench_ours(model, prompts, args.new_tokens, args.device, not args.no_compile, options)
    elem = next(model.parameters()).element_size()
    nbytes = step_bytes(cfg, batch, plen + args.new_tokens / 2, elem)
    row["ours"]["bandwidth_fraction"] = row["ours"]["decode_tok_s"] / batch * nbytes / args.read_bandwidth
    row["hf"] = {}
    for variant in args.hf_variants:
        try:
            row["hf"][variant] = bench_hf(hf, prompts, args.hf_new_tokens, args.device, variant)
        except Exception as err:  # record, keep benchmarking
            row["hf"][variant] = {"error": f"{type(err).__name__}: {err}"[:300]}
    for key in ("e2e_tok_s", "decode_tok_s"):
        rates = [v[key] for v in row["hf"].values() if key in v]
        row[f"hf_best_{key}"] = max(rates) if rates else None
    print(json.dumps(row), flush=True)
    return row


def save(out: Path, args: argparse.Namespace, dtype: torch.dtype, rows: list[dict]) -> None:
    result = {
        **result_header("decode_throughput", args.device),
        "dtype": str(dtype).removeprefix("torch."),
        "fused_step": args.step,
        "read_bandwidth_gb_s": args.read_bandwidth / 1e9,
        "results": rows,
    }
    write_result(result, out, quiet=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", nargs="+", default=["140m", "360m", "950m"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--prompt-lens", nargs="+", type=int, default=[128, 4096])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--hf-new-tokens", type=int, default=None, help="default: --new-tokens")
    p.add_argument("--hf-variants", nargs="*", default=["dynamic", "static", "static_compiled"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="both engines")
    p.add_argument("--no-compile", action="store_true", help="run our engine eagerly")
    p.add_argument(
        "--step",
        choices=list(STEP_MODES),
        default="five",
        help="batch 1: the fused step's kernels (FusedDecoder: fuse_mlp, persistent)",
    )
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/decode_<device>_<date>.json)"
    )
    args = p.parse_args()
    args.hf_new_tokens = args.hf_new_tokens or args.new_tokens

    import transformers

    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    args.read_bandwidth = read_bandwidth(args.device)
    print(f"read bandwidth {args.read_bandwidth / 1e9:.0f} GB/s", flush=True)
    out = Path(args.out) if args.out else dated_result(f"decode_{args.device}")
    rows: list[dict] = []
    for name in args.presets:
        cfg = preset(name, long_context=True)
        model = build_model(cfg, device=args.device, dtype=dtype, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            save_pretrained(model, None, tmp + "/ckpt")
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                tmp + "/ckpt", dtype=dtype, attn_implementation="sdpa"
            ).to(args.device)
        hf.eval()
        for batch in args.batches:
            for plen in args.prompt_lens:
                rows.append(run_config(name, batch, plen, args, model, hf))
                save(out, args, dtype, rows)  # after every row: a cut-off run keeps its data
        del model, hf
        if args.device == "cuda":
            torch.cuda.empty_cache()

    print(f"\nwrote {out}")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    """tok/s; decode = after prefill; transformers: best of its variants."""
    print(
        f"{'preset':>6} {'batch':>5} {'prompt':>6} | {'ours e2e':>9} {'hf e2e':>8} | {'ours dec':>9} {'hf dec':>8} | dec x | BW"
    )
    for r in rows:
        hf_e2e, hf_dec = r["hf_best_e2e_tok_s"] or 0.0, r.get("hf_best_decode_tok_s") or 0.0
        ratio = f"{r['ours']['decode_tok_s'] / hf_dec:5.1f}x" if hf_dec else "  n/a"
        print(
            f"{r['preset']:>6} {r['batch']:>5} {r['prompt_len']:>6} | {r['ours']['e2e_tok_s']:9.1f} "
            f"{hf_e2e:8.1f} | {r['ours']['decode_tok_s']:9.1f} {hf_dec:8.1f} | {ratio} | "
            f"{r['ours']['bandwidth_fraction']:.0%}"
        )


if __name__ == "__main__":
    main()
