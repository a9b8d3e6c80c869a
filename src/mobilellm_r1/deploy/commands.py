"""`mobilellm-r1 generate`: load a checkpoint and continue a prompt, streaming the text as it grows.

`StreamPrinter` prints one sample's text while it is generated (`text_stream.TextStream` holds
back UTF-8 characters split across tokens and possible stop strings until complete). Heavy modules (torch, the
model) are imported inside `run_generate` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer
    from .generate import Completion

from ..argtypes import Command, non_negative_float, non_negative_int, positive_int, probability
from ..devices import add_device_argument
from ..model.config import DTYPE_NAMES
from .text_stream import TextStream


def _write(text: str) -> None:
    """Write to stdout and flush (streamed output must appear at once)."""
    sys.stdout.write(text)
    sys.stdout.flush()


class StreamPrinter:
    """`Generator.generate(stream=...)` callback that prints one sample's text as it grows
    (a `TextStream`: text past a stop token or stop string is never printed)."""

    def __init__(self, tokenizer: Tokenizer, stop_ids: Sequence[int], stop_strings: Sequence[str]) -> None:
        self.text = TextStream(tokenizer, stop_ids, stop_strings)

    def __call__(self, prompt_index: int, sample_index: int, new_ids: list[int]) -> None:
        _write(self.text.push(new_ids))

    def finish(self, final_text: str) -> None:
        """Print the rest of the completed sample's text and end the line."""
        _write(self.text.finish(final_text) + "\n")


def _read_prompt(text: str) -> str:
    """The prompt text; '-' reads stdin (trailing newlines removed)."""
    prompt = sys.stdin.read().rstrip("\n") if text == "-" else text
    if not prompt:
        raise ValueError("the prompt is empty")
    return prompt


def build_prompt_ids(tokenizer: Tokenizer, prompt: str, chat: bool, system: str | None) -> list[int]:
    """Plain: BOS + prompt. Chat (or any system prompt): the chat template with a generation prompt."""
    from ..tokenizer import chat_messages

    if not chat and system is None:
        return tokenizer.encode(prompt, bos=True)
    messages = chat_messages(prompt, system)
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def _print_samples(completions: Sequence[Completion]) -> None:
    """Each sample's text under a header line."""
    for c in completions:
        header = f"=== sample {c.sample_index + 1}/{len(completions)} "
        header += f"({len(c.token_ids)} tokens, finish: {c.finish_reason}) ==="
        _write(f"{header}\n{c.text or ''}\n")


def _print_stats(n_prompt: int, completions: Sequence[Completion], seconds: float) -> None:
    """One line on stderr: tokens, seconds, tokens per second."""
    tokens = sum(len(c.token_ids) for c in completions)
    rate = tokens / seconds if seconds > 0 else float("inf")
    print(
        f"[{tokens} tokens in {seconds:.2f} s, {rate:.1f} tok/s; "
        f"{len(completions)} sample(s), prompt {n_prompt} tokens]",
        file=sys.stderr,
        flush=True,
    )


def _add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="checkpoint directory, hub id, or a file written by `export` (.pte, .gguf)",
    )
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="prompt text, or '-' to read stdin")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument(
        "--system",
        metavar="S",
        help="system prompt: math, python, cpp (the model card's prompts) or literal text; implies --chat",
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=256, metavar="N", help="(default: 256)"
    )
    parser.add_argument(
        "--temperature", type=non_negative_float, default=0.0, metavar="T", help="0 = greedy (default: 0)"
    )
    parser.add_argument(
        "--top-p", type=probability, default=1.0, metavar="P", help="nucleus mass in (0, 1] (default: 1.0)"
    )
    parser.add_argument(
        "--top-k", type=non_negative_int, default=0, metavar="K", help="0 = no top-k (default: 0)"
    )
    parser.add_argument("--n", type=positive_int, default=1, metavar="N", help="samples (default: 1)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="sampling seed")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default=None, help="compute dtype (default: the checkpoint's)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decode step (CUDA graphs on GPU; one prompt on a GPU runs the fused Triton step)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, metavar="N", help="CPU threads (default: the runtime's)"
    )
    parser.add_argument("--no-stream", action="store_true", help="print the text only when done")


def run_generate(args: argparse.Namespace) -> int:
    """`generate`: load a checkpoint or an exported file and continue one prompt."""
    from .load import load_for_generation
    from .sampling import SamplingParams

    prompt = _read_prompt(args.prompt)
    loaded = load_for_generation(
        args.model,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        threads=args.threads,
        sync_every=16 if args.no_stream or args.n > 1 else 4,
    )
    ids = build_prompt_ids(loaded.tokenizer, prompt, args.chat, args.system)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        n=args.n,
        seed=args.seed,
        stop_strings=tuple(args.stop),
    )
    stream = None
    if args.n == 1 and not args.no_stream:
        stream = StreamPrinter(loaded.tokenizer, loaded.eos_token_id, args.stop)
    start = time.perf_counter()
    completions = loaded.generator.generate([ids], params, stream=stream)[0]
    seconds = time.perf_counter() - start
    if stream is not None:
        stream.finish(completions[0].text or "")
    elif args.n == 1:
        _write((completions[0].text or "") + "\n")
    else:
        _print_samples(completions)
    _print_stats(len(ids), completions, seconds)
    return 0


GENERATE = Command(
    name="generate",
    help="generate text from a checkpoint",
    description="""\
Load a checkpoint and continue a prompt. With one sample the text is streamed to stdout
as it is generated; with --n > 1 each sample is printed under a header. A stats line
(tokens, seconds, tokens/s) goes to stderr.

The prompt is BOS + TEXT by default (base models); --chat (implied by --system) wraps it
in the chat template. Decoding is greedy by default (--temperature 0); the MobileLLM-R1
model card recommends --temperature 0.6 --top-p 0.95 for the post-trained models.

examples:
  mobilellm-r1 generate --model runs/tiny-init --prompt "The capital of France is"
  mobilellm-r1 generate --model facebook/MobileLLM-R1-950M --system math \\
      --prompt "What is 17 * 23?" --temperature 0.6 --top-p 0.95 --max-new-tokens 2048
  echo "Write a function that reverses a list." | \\
      mobilellm-r1 generate --model DIR --system python --prompt - --n 4 --seed 0""",
    add_arguments=_add_generate_arguments,
    run=run_generate,
)


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from .formats import FORMATS

    parser.add_argument(
        "--model", required=True, metavar="DIR", help="checkpoint directory (ours or transformers')"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="output file (.pte or .gguf)")
    parser.add_argument(
        "--format", choices=list(FORMATS), default=None, help="file format (default: from the --out suffix)"
    )
    quants = "; ".join(f"{f.name}: {', '.join(f.quants)} (default {f.quants[0]})" for f in FORMATS.values())
    parser.add_argument("--quant", default=None, metavar="Q", help=quants)
    parser.add_argument(
        "--max-context",
        type=positive_int,
        default=None,
        metavar="N",
        help="positions the file's KV cache holds (default: the model's max_position_embeddings)",
    )
    parser.add_argument(
        "--group-size",
        type=positive_int,
        default=None,
        metavar="G",
        help="4-bit weight group of linear layers (default: 128, or 32 where 128 does not divide a width)",
    )
    parser.add_argument(
        "--embedding-group-size",
        type=positive_int,
        default=32,
        metavar="G",
        help="4-bit embedding group for pte 8da4w (default: 32)",
    )
    parser.add_argument(
        "--kv-cache",
        default="fp32",
        metavar="KIND",
        help="how a pte file stores its KV cache: fp32 (default; the faster on x86 CPUs) or int8 "
        "(a quarter of the bytes; ExecuTorch's quantized SDPA)",
    )
    parser.add_argument(
        "--bench",
        action="store_true",
        help="then run the file: prefill 128 tokens and decode 64, report tok/s (in the JSON line)",
    )


def run_export(args: argparse.Namespace) -> int:
    """`export`: write one on-device file from a checkpoint."""
    from .export import export_checkpoint
    from .formats import FORMATS, format_of_path
    from .formats.contract import ExportError, ExportOptions

    fmt = FORMATS[args.format] if args.format else format_of_path(args.out)
    if fmt is None:
        raise ExportError(f"--out {args.out}: give --format, or a file name ending in .pte or .gguf")
    options = ExportOptions(
        quant=args.quant or fmt.quants[0],
        max_context=args.max_context,
        group_size=args.group_size,
        embedding_group_size=args.embedding_group_size,
        kv_cache=args.kv_cache,
    )
    start = time.perf_counter()
    out = export_checkpoint(args.model, fmt.name, args.out, options)
    seconds = time.perf_counter() - start
    size = out.stat().st_size / 2**20
    print(f"{out}: {fmt.name} {options.quant}, {size:,.1f} MiB in {seconds:.1f} s", file=sys.stderr)
    report = {"out": str(out), "format": fmt.name, "quant": options.quant, "mib": size, "seconds": seconds}
    if args.bench:
        from .file_runtime import measure_speed

        report["speed"] = measure_speed(fmt.load().open_runtime(out))
        speed = report["speed"]
        print(
            f"{out}: prefill {speed['prefill_tok_s']:.1f} tok/s, decode {speed['decode_tok_s']:.1f} tok/s",
            file=sys.stderr,
        )
    print(json.dumps(report))
    return 0


EXPORT = Command(
    name="export",
    help="write an on-device file (ExecuTorch .pte, llama.cpp .gguf) from a checkpoint",
    description="""\
Export a checkpoint for on-device inference. The file holds the real weights, the tokenizer,
the chat template and the context it was built for; `generate --model FILE` runs it.

  pte   ExecuTorch program for XNNPACK (phones, laptops): KV cache inside the program,
        ExecuTorch's custom SDPA / update-cache ops. --quant 8da4w is the paper's recipe
        (Appendix C): int8 dynamic activations + int4 weights in groups of 128 (32 where 128
        does not divide a width) for linear layers, 4-bit embedding in groups of 32.
  gguf  for stock llama.cpp (and its bindings, e.g. llama-cpp-python). Written as
        architecture `maincoder`, which computes exactly our dense Llama-4 math (see
        ARCHITECTURE.md); q8_0 / q4_0 / q4_k_m use llama.cpp's own quantizer.

Needs the deploy extra: pip install 'mobilellm-r1[deploy]'. The output appears only when
complete (a failed export leaves no file).

examples:
  mobilellm-r1 export --model runs/tiny_cpu/final --out tiny.pte --quant 8da4w
  mobilellm-r1 export --model DIR --out model-q4_0.gguf --quant q4_0 --max-context 4096
  mobilellm-r1 generate --model tiny.pte --prompt 'The capital of France is' --max-new-tokens 20""",
    add_arguments=_add_export_arguments,
    run=run_export,
)


API_KEY_ENV = "MOBILELLM_R1_API_KEY"


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (or hub id)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="(default: 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="K",
        help=f"require 'Authorization: Bearer K' on /v1/* (default: ${API_KEY_ENV}, else no key)",
    )
    parser.add_argument(
        "--served-model-name",
        default=None,
        metavar="NAME",
        help="the model id clients send (default: --model)",
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=256,
        metavar="N",
        help="samples decoded together (default: 256)",
    )
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="(default: the checkpoint's)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (CUDA graphs on GPU), for every batch bucket before serving",
    )
    parser.add_argument(
        "--decode-steps",
        type=positive_int,
        default=None,
        metavar="K",
        help="decode steps queued per host sync: tokens stream in bursts of up to K "
        "(default: 8 on a GPU, 1 on CPU; 1 streams every token as it comes)",
    )
    parser.add_argument(
        "--prefill-chunk",
        type=positive_int,
        default=None,
        metavar="T",
        help="prompt tokens prefilled per engine step: larger admits waiting requests sooner, "
        "smaller keeps running streams smoother (default: 4096 on a GPU, 512 on CPU)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """`serve`: load a checkpoint and answer the OpenAI API until interrupted."""
    import os

    from ..model.hf import load_checked
    from .serve import build_server, serve

    model, tokenizer = load_checked(args.model, device=args.device, dtype=args.dtype)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    options = {
        "max_batch": args.max_batch,
        "compile": args.compile,
        "decode_steps": args.decode_steps,
        "prefill_chunk": args.prefill_chunk,
    }
    name = args.served_model_name or args.model
    server = build_server(model, tokenizer, name=name, api_key=api_key, engine_options=options)
    serve(server, args.host, args.port)
    return 0


SERVE = Command(
    name="serve",
    help="serve a checkpoint over the OpenAI API (continuous batching)",
    description=f"""\
Serve a checkpoint over an OpenAI-compatible HTTP API: /v1/models, /v1/completions,
/v1/chat/completions (the model's chat template; stream, n, stop, max_tokens, logprobs,
seed, usage), /health and Prometheus /metrics. Requests are decoded together by the
continuous-batching engine (paged KV cache, prefix sharing for n samples, chunked prefill).
Needs the serve extra: pip install 'mobilellm-r1[serve]'.

examples:
  mobilellm-r1 serve --model runs/tiny_cpu/final --port 8000
  {API_KEY_ENV}=secret mobilellm-r1 serve --model DIR --host 0.0.0.0
  mobilellm-r1 eval --server http://127.0.0.1:8000/v1 --served-model DIR --tasks gsm8k""",
    add_arguments=_add_serve_arguments,
    run=run_serve,
)


COMMANDS = (GENERATE, EXPORT, SERVE)
