"""Exported files against the model they came from (issue 19's checks, as figures).

For one checkpoint (a trained tiny model: the checks need real argmax margins) every file kind is
exported and run in its own runtime:
  * float files (pte none, gguf f32 with an f32 KV cache, gguf f16): the largest |logit
    difference| from our model (for f16: our model with its weights rounded to float16) at the
    prompt and along our model's 64 greedy tokens, and whether the file's own 64 greedy tokens
    (through `FileGenerator`) are ours;
  * quantized files (pte 8da4w; gguf q8_0, q4_0, q4_k_m): the same against OUR model running
    the same quantization eagerly (pte: torchao's 8da4w on our modules; gguf: the file's own
    weights, dequantized, in our model; llama.cpp also rounds activations to 8 bits in q4/q8
    dot products, which the eager model does not);
  * every file: top-1 agreement with the unquantized float32 model over `--positions` positions
    of held-out text (wikitext-2 test, teacher-forced).

    python benchmarks/export_parity.py --model runs/tiny_cpu/final

Writes benchmarks/results/export_parity_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.export import export_checkpoint
from mobilellm_r1.deploy.file_runtime import FileGenerator, top1_agreement
from mobilellm_r1.deploy.formats import FORMATS
from mobilellm_r1.deploy.formats.contract import ExportOptions
from mobilellm_r1.model.hf import load_checked
from provenance import dated_result, result_header, write_result

KINDS = [("pte", "none"), ("pte", "8da4w"), ("gguf", "f32"), ("gguf", "f16"), ("gguf", "q8_0"), ("gguf", "q4_0"), ("gguf", "q4_k_m")]  # fmt: skip
HELD_OUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora" / "wikitext2"
STEPS = 64
PROMPT = 64


def held_out_ids(tokenizer, count: int) -> list[int]:
    """BOS + the first `count` + PROMPT tokens of wikitext-2's test split."""
    text = (HELD_OUT / "test.txt").read_text(encoding="utf-8")[: 40 * (count + PROMPT)]
    return tokenizer.encode(text, bos=True)[: count + PROMPT]


def reference(model, fmt: str, quant: str, path: Path):
    """Our model computing what the file should compute (see module docstring)."""
    if quant in ("none", "f32"):
        return model
    ref = copy.deepcopy(model)
    if quant == "f16":
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(p.half().float())
        return ref
    if fmt == "pte":
        module = FORMATS["pte"].load()
        return module.quantize_8da4w(ref, *module.weight_groups(model.config, ExportOptions(quant)))
    ref.load_state_dict(FORMATS["gguf"].load().read_weights(path, model.config))
    return ref


@torch.no_grad()
def logits_gap(runtime, ref, prompt: list[int], greedy: list[int]) -> float:
    """Max |file logits - ref logits| at the prompt's last position and along `greedy`."""
    want = ref(torch.tensor([prompt + greedy]))[0, len(prompt) - 1 :].float()  # [STEPS + 1, V]
    got = [runtime.forward(prompt, 0)]
    got += [runtime.forward([t], len(prompt) + i) for i, t in enumerate(greedy)]
    return float((torch.stack(got) - want).abs().max())


def measure(model, tokenizer, fmt: str, quant: str, ids: list[int], tmp: Path, args) -> dict:
    out = tmp / f"tiny-{quant}.{fmt}"
    start = time.perf_counter()
    export_checkpoint(args.model, fmt, out, ExportOptions(quant, max_context=args.max_context))
    row = {
        "format": fmt,
        "quant": quant,
        "export_s": time.perf_counter() - start,
        "file_mib": out.stat().st_size / 2**20,
    }
    opts = {"kv_cache": "f32"} if (fmt, quant) == ("gguf", "f32") else {}
    runtime = FORMATS[fmt].load().open_runtime(out, **opts)
    ref = reference(model, fmt, quant, out)
    prompt, params = ids[:PROMPT], SamplingParams(max_new_tokens=STEPS, stop_token_ids=())
    want = Generator(ref, tokenizer).generate([prompt], params)[0][0].token_ids
    got = FileGenerator(runtime).generate([prompt], params)[0][0].token_ids
    row["greedy_same"] = sum(a == b for a, b in zip(want, got, strict=True))
    row["greedy_same_prefix"] = next(
        (i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b), STEPS
    )
    row["max_logit_gap_vs_reference"] = logits_gap(runtime, ref, prompt, want)
    row["reference"] = (
        "float32 model"
        if ref is model
        else ("float16-rounded weights" if quant == "f16" else "same quantization, eager")
    )
    row["top1_vs_float_model"] = top1_agreement(runtime, model, ids[: args.positions])
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained checkpoint directory")
    p.add_argument("--positions", type=int, default=1000)
    p.add_argument("--max-context", type=int, default=2048)
    p.add_argument("--kinds", default=",".join(f"{f}:{q}" for f, q in KINDS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_checked(args.model, device="cpu", dtype="float32")
    ids = held_out_ids(tokenizer, args.positions)
    result = result_header("export_parity", device="cpu") | {
        "model": args.model,
        "positions": args.positions,
        "rows": [],
    }
    out = args.out or dated_result("export_parity")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            fmt, quant = kind.split(":")
            result["rows"].append(measure(model, tokenizer, fmt, quant, ids, Path(tmp), args))
            write_result(result, out, quiet=True)
    write_result(result, out)
    print("file | MiB | export s | same greedy tokens (of 64) | max logit gap | vs | top-1 agreement")
    for r in result["rows"]:
        print(
            f"{r['format']} {r['quant']} | {r['file_mib']:.1f} | {r['export_s']:.0f} | {r['greedy_same']} "
            f"(prefix {r['greedy_same_prefix']}) | {r['max_logit_gap_vs_reference']:.2e} | {r['reference']} | "
            f"{r['top1_vs_float_model']:.3f}"
        )


if __name__ == "__main__":
    main()
