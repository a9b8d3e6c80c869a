"""The `mobilellm-r1` command line: `info`, `init` and `generate` subcommands.

Each subcommand is a `Command` (name, help, description, `add_arguments`, `run`) in
`COMMANDS`; a new subcommand (`data`, `train`, `eval`, `curate`, ...) is one more entry made
with `register`. Heavy modules (torch, the model, the tokenizer) are imported inside the
`run` functions only.

Errors: bad arguments give argparse's usage message and exit code 2; expected runtime
errors (missing files, bad checkpoints, invalid values) print one line
`mobilellm-r1: error: <message>` on stderr and exit with 1 (`--debug` re-raises instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deploy.generate import Completion
    from .model.config import ModelConfig
    from .tokenizer import Tokenizer

from .argtypes import non_negative_float, non_negative_int, positive_int, probability
from .curation import commands as _curate_commands
from .data import commands as _data_commands
from .devices import device_arg, resolve_device
from .eval import commands as _eval_commands
from .train import commands as _train_commands

PROG = "mobilellm-r1"
# Errors reported as one line (exit 1). CheckpointError is a ValueError, FileNotFoundError an OSError.
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError)
DTYPE_CHOICES = ("float32", "bfloat16", "float16")
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Command:
    """One subcommand: `add_arguments(parser)` declares its options, `run(args)` returns the exit code."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand to the CLI (name must be new); returns it for convenience."""
    if command.name in COMMANDS:
        raise ValueError(f"subcommand {command.name!r} is already registered")
    COMMANDS[command.name] = command
    return command


# =========================================================================== helpers
def _one_line(err: BaseException) -> str:
    """The exception message on one line (type name if the message is empty)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _fmt_si(value: float, unit: str) -> str:
    """1.234e9 -> '1.23 G<unit>'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:g} {unit}"


def _fmt_bytes(value: int) -> str:
    for scale, unit in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if value >= scale:
            return f"{_fmt_int(value)} B ({value / scale:.1f} {unit})"
    return f"{_fmt_int(value)} B"


def _write(text: str) -> None:
    """Write to stdout and flush (streamed output must appear at once)."""
    sys.stdout.write(text)
    sys.stdout.flush()


# =========================================================================== info
ARCH_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size_mlp",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "use_qk_norm",
    "tie_word_embeddings",
)


def info_record(name: str, long_context: bool = False, context: int | None = None) -> dict[str, Any]:
    """Sizes and costs of one preset as a JSON-ready dict (see `info --help`)."""
    from .model.config import preset

    cfg = preset(name, long_context=long_context)
    ctx = context or cfg.max_position_embeddings
    if ctx > cfg.max_position_embeddings:
        hint = "" if long_context else " (add --long-context for the 32k variant)"
        raise ValueError(
            f"--context {ctx} exceeds max_position_embeddings={cfg.max_position_embeddings}{hint}"
        )
    flops = cfg.flops_per_token(ctx)
    kv = cfg.kv_cache_bytes_per_token(2)
    return {
        "preset": name.lower(),
        "long_context": long_context,
        "context": ctx,
        "total_params": cfg.num_params(),
        "non_embedding_params": cfg.num_params(include_embedding=False),
        "flops_per_token_forward": flops["forward"],
        "flops_per_token_train": flops["train"],
        "flops_per_token_train_6n": flops["train_6n"],
        "kv_cache_bytes_per_token_bf16": kv,
        "kv_cache_bytes_at_context_bf16": kv * ctx,
        "config": cfg.to_dict(),
    }


_INFO_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("total params", lambda r: _fmt_int(r["total_params"])),
    ("non-embedding params", lambda r: _fmt_int(r["non_embedding_params"])),
    ("context (for FLOPs)", lambda r: _fmt_int(r["context"])),
    ("forward FLOPs/token", lambda r: _fmt_si(r["flops_per_token_forward"], "FLOP")),
    ("train FLOPs/token (3x fwd)", lambda r: _fmt_si(r["flops_per_token_train"], "FLOP")),
    ("train FLOPs/token (6N)", lambda r: _fmt_si(r["flops_per_token_train_6n"], "FLOP")),
    ("KV cache/token (bf16)", lambda r: _fmt_bytes(r["kv_cache_bytes_per_token_bf16"])),
    ("KV cache @ context (bf16)", lambda r: _fmt_bytes(r["kv_cache_bytes_at_context_bf16"])),
    *((name, lambda r, n=name: str(r["config"][n])) for name in ARCH_FIELDS),
)


def format_info_table(records: Sequence[dict[str, Any]]) -> str:
    """A text table: one row per quantity, one column per preset."""
    rows = [["preset", *(r["preset"] + (" (32k)" if r["long_context"] else "") for r in records)]]
    rows += [[label, *(fmt(r) for r in records)] for label, fmt in _INFO_ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", required=True, metavar="P", help="preset name (140m, 360m, 950m, tiny) or 'all'"
    )
    parser.add_argument(
        "--long-context", action="store_true", help="the 32k post-trained variant (rope_theta x8)"
    )
    parser.add_argument(
        "--context",
        type=positive_int,
        metavar="N",
        help="attention context for the FLOPs (default: the preset's max_position_embeddings)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_info(args: argparse.Namespace) -> int:
    """`info`: print sizes and costs of one or all presets."""
    from .model.config import PRESETS

    names = list(PRESETS) if args.preset.lower() == "all" else [args.preset]
    records = [info_record(n, args.long_context, args.context) for n in names]
    if args.json:
        payload: Any = records if args.preset.lower() == "all" else records[0]
        print(json.dumps(payload, indent=2))
    else:
        print(format_info_table(records))
    return 0


register(
    Command(
        name="info",
        help="parameter counts, FLOPs and KV-cache size of a preset",
        description="""\
Print a preset's parameter counts (total and without the embedding), matmul FLOPs per
token at an attention context (forward, and training = 3x forward; the 6N approximation
is shown too), the KV-cache bytes per token at bf16 and the architecture fields.

examples:
  mobilellm-r1 info --preset 950m
  mobilellm-r1 info --preset 360m --long-context --context 16384 --json
  mobilellm-r1 info --preset all --json""",
        add_arguments=_add_info_arguments,
        run=run_info,
    )
)


# =========================================================================== init
def _check_output_dir(path: Path, force: bool) -> None:
    """Refuse a non-directory, or a non-empty directory unless `force`."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(f"{path} is not empty; pass --force to replace it")


def _add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, metavar="P", help="preset name (140m, 360m, 950m, tiny)")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="checkpoint directory to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default="float32", help="weight dtype on disk (default: float32)"
    )
    parser.add_argument(
        "--long-context", action="store_true", help="the 32k variant (rope_theta x8, 32768 positions)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace DIR even if it is not empty (its files are removed)"
    )


def run_init(args: argparse.Namespace) -> int:
    """`init`: save a randomly initialised model with the default tokenizer."""
    from .model.config import preset
    from .model.hf import dtype_from_name, save_pretrained
    from .model.model import build_model
    from .tokenizer import load_tokenizer

    cfg = preset(args.preset, long_context=args.long_context)
    _check_output_dir(args.out, args.force)
    model = build_model(cfg, seed=args.seed)
    path = save_pretrained(model, load_tokenizer(), args.out, dtype=dtype_from_name(args.dtype))
    count = sum(p.numel() for p in model.parameters())
    print(f"{path}")
    print(f"{args.preset.lower()}: {_fmt_int(count)} parameters, {args.dtype}, seed {args.seed}")
    return 0


register(
    Command(
        name="init",
        help="write a randomly initialised checkpoint",
        description="""\
Build a preset with random weights (normal, std = initializer_range) and save it as a
Hugging Face directory (config.json, model.safetensors, tokenizer files) that `generate`,
`load_pretrained` and transformers' AutoModelForCausalLM can load. An existing non-empty
DIR is refused unless --force, which replaces it.

examples:
  mobilellm-r1 init --preset tiny --out runs/tiny-init
  mobilellm-r1 init --preset 950m --out ckpt/950m-init --dtype bfloat16 --seed 1""",
        add_arguments=_add_init_arguments,
        run=run_init,
    )
)


# =========================================================================== generate
class IncrementalDecoder:
    """Token ids in, newly completed text out.

    Multi-byte UTF-8 characters can span tokens, so text is only emitted once the decoded
    suffix does not end in U+FFFD; the held-back bytes are emitted with the next token that
    completes them (or by `flush`).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the window re-decoded on each push
        self._read = 0  # ids before this index have been emitted

    def push(self, new_ids: Sequence[int]) -> str:
        """Append ids; return the text they complete ('' while a character is incomplete)."""
        self.ids.extend(new_ids)
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        full = self.tokenizer.decode(self.ids[self._prefix :])
        if len(full) <= len(done) or full.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return full[len(done) :]

    def flush(self) -> str:
        """Text of ids not emitted yet, incomplete characters as U+FFFD."""
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        full = self.tokenizer.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return full[len(done) :]


class StreamPrinter:
    """`Generator.generate(stream=...)` callback that prints one sample's text as it grows.

    Ids after a stop token are ignored; text that may be the start of a stop string is held
    back. `finish(final_text)` prints whatever of the final text is still missing.
    """

    def __init__(self, tokenizer: Tokenizer, stop_ids: Sequence[int], stop_strings: Sequence[str]) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop_ids = set(stop_ids)
        self.stop_strings = [s for s in stop_strings if s]
        self.text = ""  # decoded so far
        self.printed = ""  # written to stdout so far
        self.stopped = False

    def __call__(self, prompt_index: int, sample_index: int, new_ids: list[int]) -> None:
        if self.stopped:
            return
        cut = next((i for i, t in enumerate(new_ids) if t in self.stop_ids), None)
        if cut is not None:
            new_ids, self.stopped = new_ids[:cut], True
        self.text += self.decoder.push(new_ids)
        self._emit(self._visible())

    def _visible(self) -> str:
        """Text that is safe to print: cut at a stop string, without a possible stop-string start."""
        text = self.text
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                self.stopped = True
                text = text[:at]
        hold = max(
            (k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0
        )
        return text[: len(text) - hold]

    def _emit(self, visible: str) -> None:
        if visible.startswith(self.printed) and len(visible) > len(self.printed):
            _write(visible[len(self.printed) :])
            self.printed = visible

    def finish(self, final_text: str) -> None:
        """Print the rest of the completed sample's text and end the line."""
        self._emit(final_text)
        _write("\n")


def _read_prompt(text: str) -> str:
    """The prompt text; '-' reads stdin (trailing newlines removed)."""
    prompt = sys.stdin.read().rstrip("\n") if text == "-" else text
    if not prompt:
        raise ValueError("the prompt is empty")
    return prompt


def build_prompt_ids(tokenizer: Tokenizer, prompt: str, chat: bool, system: str | None) -> list[int]:
    """Plain: BOS + prompt. Chat (or any system prompt): the chat template with a generation prompt."""
    from .tokenizer import chat_messages

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
    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (or hub id)")
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
    parser.add_argument(
        "--device", type=device_arg, default=None, help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=None, help="compute dtype (default: the checkpoint's)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decode step (CUDA graphs on GPU; one prompt on a GPU runs the fused Triton step)",
    )
    parser.add_argument("--no-stream", action="store_true", help="print the text only when done")


def run_generate(args: argparse.Namespace) -> int:
    """`generate`: load a checkpoint and continue one prompt."""
    from .deploy.generate import Generator, check_finite_weights
    from .deploy.sampling import SamplingParams
    from .model.hf import dtype_from_name, load_pretrained

    prompt = _read_prompt(args.prompt)
    device = resolve_device(args.device)
    dtype = dtype_from_name(args.dtype) if args.dtype else None
    model, tokenizer = load_pretrained(args.model, device=device, dtype=dtype)
    check_finite_weights(model, args.model)
    ids = build_prompt_ids(tokenizer, prompt, args.chat, args.system)
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
        stream = StreamPrinter(tokenizer, _config_stop_ids(model.config), args.stop)
    generator = Generator(model, tokenizer, compile=args.compile, sync_every=4 if stream else 16)
    start = time.perf_counter()
    completions = generator.generate([ids], params, stream=stream)[0]
    seconds = time.perf_counter() - start
    if stream is not None:
        stream.finish(completions[0].text or "")
    elif args.n == 1:
        _write((completions[0].text or "") + "\n")
    else:
        _print_samples(completions)
    _print_stats(len(ids), completions, seconds)
    return 0


def _config_stop_ids(cfg: ModelConfig) -> list[int]:
    """The ids that end generation by default (the config's eos ids)."""
    return list(cfg.eos_token_id)


register(
    Command(
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
)


def _register_stage(module: Any) -> None:
    """Register a pipeline stage's command group (`NAME`, `HELP`, `DESCRIPTION`, `add_arguments`, `run`)."""
    register(Command(module.NAME, module.HELP, module.DESCRIPTION, module.add_arguments, module.run))


_register_stage(_data_commands)
_register_stage(_train_commands)
_register_stage(_eval_commands)
_register_stage(_curate_commands)


# =========================================================================== main
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered `Command`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate and run sub-billion-parameter reasoning LMs (MobileLLM-R1).",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Also accepted after the subcommand; SUPPRESS keeps the top-level value otherwise.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _exit_code(code: object) -> int:
    """SystemExit.code -> int (None is 0; a message is 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return _exit_code(exc.code)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RUNTIME_ERRORS as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
