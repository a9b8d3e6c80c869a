"""What the paper-claim scripts share: the corpus and tokenizer, init / train / evaluate runs,
seeds, statistics and the verdict, and where and how results are written.

Every claim runs in a work directory laid out as

    WORK/corpus.json            the corpus settings (a work dir is refused for other settings)
    WORK/synth/                 the embedded synthetic corpus (`data synth` layout, incl. eval/)
    WORK/tokenizer/             a BPE vocabulary learned on that corpus (`--vocab bpe`)
    WORK/recipes/*.yaml         mixture recipes with absolute paths (noisy pretraining, clean)
    WORK/shards/<recipe>/...    tokenized shards
    WORK/seed_<k>/...           each seed's models and evaluations

A training run whose output already exists, made with the same settings from the same starting
weights, is reused, so a script cut off part way continues where it stopped; a run with other
settings, or whose starting model was re-trained, is trained again. Evaluations always re-run.

The learned vocabulary (`data train-tokenizer`, 4,096 ids) makes the `tiny` preset ~10x cheaper
per token than the Llama-3 vocabulary, which is what fits three seeds of a claim into minutes
on two CPU cores; `--vocab llama3 --preset 140m --device cuda` runs the same scripts at the
paper's vocabulary and a real size.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobilellm_r1.cli import main as cli_main
from mobilellm_r1.curation.mixing import write_recipe
from mobilellm_r1.data.recipes import load_mixture, prepare
from mobilellm_r1.data.records import read_records
from mobilellm_r1.eval.nll import model_loss_sums, reference_nll, text_examples, token_mean_nll
from mobilellm_r1.eval.rankme import rankme_of_model
from mobilellm_r1.model.hf import load_checked
from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import RESULTS, result_header, write_result

CLAIM_RESULTS = RESULTS / "paper_claims"
CAPABILITIES = ("math", "code", "knowledge")
RECIPES = {"noisy": "data/synthetic_noisy", "clean": "data/synthetic"}
VOCABS = ("bpe", "llama3")
SETTINGS_FILE = "claim_run.json"  # a run directory's settings and summary, for reuse


# ------------------------------------------------------------------ the corpus
@dataclass(frozen=True)
class Corpus:
    """A prepared work directory: the synthetic corpus, its tokenizer and mixture recipes."""

    work: Path
    tokenizer: str | None  # tokenizer directory; None: the Llama-3 vocabulary

    @property
    def synth(self) -> Path:
        return self.work / "synth"

    @property
    def eval_dir(self) -> Path:
        """Held-out benchmark files (`gsm8k/test.jsonl`, `math500`, `mmlu`) no source contains."""
        return self.synth / "eval"

    def recipe(self, name: str) -> Path:
        """The mixture recipe `name` (a key of RECIPES) with absolute paths."""
        return self.work / "recipes" / f"{name}.yaml"

    def probe(self, capability: str) -> Path:
        """Held-out probing texts of a capability (guarded: no training document contains one)."""
        return self.synth / "probe" / f"{capability}.jsonl"

    def sft(self, name: str) -> Path:
        """The synthetic chats `general` or `reasoning`."""
        return self.synth / "sft" / f"{name}.jsonl"


def prepare_corpus(work: Path, scale: float, vocab: str = "bpe", vocab_size: int = 4096) -> Corpus:
    """The synthetic corpus at `scale`, its tokenizer (`bpe`: `vocab_size` ids learned on the
    corpus and its chats; `llama3`: the default vocabulary) and the shards of both mixture
    recipes, each made when missing. A work directory prepared with other settings is refused
    (ValueError naming corpus.json), since its shards and tokenizer would not match them."""
    if vocab not in VOCABS:
        raise ValueError(f"--vocab must be one of {VOCABS}, got {vocab!r}")
    work = work.resolve()
    settings = {"scale": scale, "vocab": vocab, "vocab_size": vocab_size if vocab == "bpe" else None}
    record = work / "corpus.json"
    if record.exists() and json.loads(record.read_text()) != settings:
        raise ValueError(
            f"{record}: this work directory holds a corpus made with {record.read_text().strip()}, "
            f"not {json.dumps(settings)}; pass another --work or delete it"
        )
    corpus = Corpus(work, str(work / "tokenizer") if vocab == "bpe" else None)
    if not (corpus.synth / "manifest.json").exists():
        cli(["data", "synth", "--out", str(corpus.synth), "--seed", "0", "--scale", str(scale)])
    for name, shipped in RECIPES.items():
        recipe = dataclasses.replace(
            load_mixture(shipped),
            synth=None,
            data_root=str(corpus.synth),
            shards_root=str(work / "shards" / name),
        )
        write_recipe(recipe, corpus.recipe(name), f"{shipped} on {corpus.synth}")
    if corpus.tokenizer and not (Path(corpus.tokenizer) / "chat_template.jinja").exists():
        chats = [str(corpus.sft("general")), str(corpus.sft("reasoning"))]
        cli(["data", "train-tokenizer", "--recipe", str(corpus.recipe("noisy")), "--chats", *chats,
             "--vocab-size", str(vocab_size), "--out", corpus.tokenizer])  # fmt: skip
    tokenizer = load_tokenizer(corpus.tokenizer)
    for name in RECIPES:
        prepare(load_mixture(corpus.recipe(name)), tokenizer)
    write_result(settings, record, quiet=True)
    return corpus


# ------------------------------------------------------------------ runs
def cli(argv: Sequence[str]) -> None:
    """`mobilellm-r1 ARGV` in this process; RuntimeError naming the command if it fails."""
    code = cli_main(["--debug", *map(str, argv)])
    if code != 0:
        raise RuntimeError(f"`mobilellm-r1 {' '.join(map(str, argv))}` exited with {code}")


def _reuse(out: Path, settings: dict) -> dict | None:
    """The saved summary of a finished run in `out` made with exactly `settings`, else None."""
    saved = out / SETTINGS_FILE
    if not (out / "final" / "config.json").exists() or not saved.exists():
        return None
    record = json.loads(saved.read_text())
    return record["summary"] if record.get("settings") == settings else None


def init_model(corpus: Corpus, out: Path, preset: str, seed: int) -> Path:
    """A randomly initialised `preset` sized to the corpus tokenizer (`mobilellm-r1 init`)."""
    settings = {"preset": preset, "seed": seed, "tokenizer": corpus.tokenizer}
    if _reuse(out, settings) is None:
        tok = ["--tokenizer", corpus.tokenizer] if corpus.tokenizer else []
        cli(["init", "--preset", preset, "--out", out / "final", "--seed", seed, "--force", *tok])
        write_result({"settings": settings, "summary": {}}, out / SETTINGS_FILE, quiet=True)
    return out / "final"


def model_fingerprint(model_dir: Path) -> str:
    """sha256 of a model directory's weights: a run started from it is reused only while the
    model it started from is the same (a re-trained upstream run re-trains what follows)."""
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def train(recipe: str, init: Path, out: Path, overrides: Sequence[str], device: str) -> dict:
    """Train the shipped `recipe` from the model in `init` with `overrides` (model.init_from and
    out_dir set here) in this process, as `mobilellm-r1 train` does; returns Trainer.fit's
    summary. A finished run in `out` from the same weights with the same overrides is reused."""
    settings = {"recipe": recipe, "init": model_fingerprint(init), "overrides": list(overrides)}
    summary = _reuse(out, settings)
    if summary is not None:
        return summary
    cfg = load_train_config(recipe, [f"model.init_from={init}", *overrides, f"out_dir={out}"])
    prepare_data(cfg, device)
    summary = Trainer(cfg, device=device, overwrite=True).fit()
    write_result({"settings": settings, "summary": summary}, out / SETTINGS_FILE, quiet=True)
    return summary


# ------------------------------------------------------------------ held-out evaluation
def read_texts(path: Path, limit: int) -> list[str]:
    """The first `limit` texts of a jsonl file."""
    texts = []
    for record in read_records([str(path)]):
        texts.append(record.text)
        if len(texts) >= limit:
            break
    return texts


def heldout_nll(model_dir: Path, corpus: Corpus, device: str, limit: int, max_len: int = 256) -> dict:
    """Token-mean NLL of held-out text: the reference solutions of the GSM8K- and MATH-format
    test sets given their problem (`gsm8k_ref`, `math500_ref`), and every token of the first
    `limit` probing texts per capability (`math`, `code`, `knowledge`)."""
    model, tokenizer = load_checked(model_dir, device=device, dtype="float32")
    model.eval()
    result = {
        f"{task}_ref": reference_nll(model, tokenizer, task, corpus.eval_dir, limit=limit)["nll"]
        for task in ("gsm8k", "math500")
    }
    with torch.inference_mode():
        for cap in CAPABILITIES:
            ids = text_examples(tokenizer, read_texts(corpus.probe(cap), limit), max_len)
            examples = [(x, x) for x in ids]  # every token scored
            result[cap] = token_mean_nll(examples, model_loss_sums(model), device=device)[0]
    return result


def rankme(model_dir: Path, corpus: Corpus, device: str, per_capability: int, max_len: int = 256) -> float:
    """RankMe (Eq. 8) of the model's mean-pooled final hidden states over `per_capability`
    held-out probing texts of each capability (use 3 x per_capability >= the hidden size)."""
    model, tokenizer = load_checked(model_dir, device=device, dtype="float32")
    texts = [t for cap in CAPABILITIES for t in read_texts(corpus.probe(cap), per_capability)]
    return rankme_of_model(model, tokenizer, texts, max_tokens=max_len)


def eval_harness(model_dir: Path, corpus: Corpus, out: Path, args: Sequence[str], device: str) -> dict:
    """`mobilellm-r1 eval --model DIR --data-dir <corpus eval> --out OUT ARGS`; returns
    summary.json (always re-run: seconds for these sets, and never stale)."""
    where = ["--model", model_dir, "--data-dir", corpus.eval_dir, "--out", out, "--device", device]
    cli(["eval", *where, *args])
    return json.loads((out / "summary.json").read_text())


def exact_match(
    model_dir: Path, corpus: Corpus, out: Path, limit: int, max_new_tokens: int, device: str
) -> float:
    """Exact match (pass@1, greedy, chat protocol, math judge) on the first `limit` held-out
    GSM8K-format problems."""
    args = ["--tasks", "gsm8k", "--chat", "--temperature", "0", "--n", "1", "--limit", limit,
            "--max-new-tokens", max_new_tokens]  # fmt: skip
    return eval_harness(model_dir, corpus, out, list(map(str, args)), device)["gsm8k"]["pass@1"]


def mmlu_accuracy(model_dir: Path, corpus: Corpus, out: Path, limit: int, device: str) -> float:
    """Accuracy on the held-out synthetic MMLU-format questions (log-likelihood of A-D, base protocol)."""
    summary = eval_harness(model_dir, corpus, out, ["--tasks", "mmlu", "--limit", str(limit)], device)
    return summary["mmlu"]["acc"]


# ------------------------------------------------------------------ statistics
def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value) of per-seed values."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": n}


def verdict(a: Sequence[float], b: Sequence[float], expected_sign: int) -> dict[str, Any]:
    """Compare per-seed values `a` (the arm the paper favours) with `b`: the paper's effect is
    that mean(a) - mean(b) has `expected_sign` (+1 or -1; -1 for losses). The effect counts
    when |difference| > 2 x the pooled standard error sqrt(s_a^2/n_a + s_b^2/n_b):
    then "holds" (the paper's sign) or "does not hold" (the other sign); else "within noise"
    ("not measurable" when a value is not finite)."""
    sa, sb = mean_std(a), mean_std(b)
    se = math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
    return _decide(sa["mean"] - sb["mean"], se, expected_sign)


def paired_verdict(a: Sequence[float], b: Sequence[float], expected_sign: int) -> dict[str, Any]:
    """`verdict`'s rule on the per-seed differences a_i - b_i, for arms that share each seed's
    starting model and data order: standard error std(d) / sqrt(n) (seed-to-seed spread that
    moves both arms alike cancels)."""
    d = mean_std([x - y for x, y in zip(a, b, strict=True)])
    return _decide(d["mean"], d["std"] / math.sqrt(d["n"]), expected_sign)


def _decide(diff: float, se: float, expected_sign: int) -> dict[str, Any]:
    """The verdict words for a difference and its standard error (see `verdict`)."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if not math.isfinite(diff) or not math.isfinite(se):
        word = "not measurable"  # e.g. a correlation with a constant sequence
    elif abs(diff) <= 2 * se or diff == 0:
        word = "within noise"
    else:
        word = "holds" if diff * expected_sign > 0 else "does not hold"
    return {"difference": diff, "se": se, "expected_sign": expected_sign, "verdict": word}


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values`, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks); NaN when either is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two equal-length sequences of >= 2 values, got {len(x)}, {len(y)}")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


# ------------------------------------------------------------------ script plumbing
def add_common_arguments(parser: argparse.ArgumentParser, claim: str) -> None:
    """--out --work --seeds --device --preset --vocab --vocab-size --scale --threads."""
    parser.add_argument(
        "--out", default=None, help=f"result JSON (default: {CLAIM_RESULTS}/{claim}_<date>.json)"
    )
    parser.add_argument("--work", default=f"runs/paper_claims/{claim}", help="work directory (reused)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, 140m, ...)")
    parser.add_argument(
        "--vocab", choices=VOCABS, default="bpe", help="learned BPE or the Llama-3 vocabulary"
    )
    parser.add_argument("--vocab-size", type=int, default=4096, help="ids of the learned BPE vocabulary")
    parser.add_argument("--scale", type=float, default=2.0, help="synthetic corpus size (1: ~0.55M tokens)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default, one per core); on cores shared with another "
        "training process 1 is several times faster (no OpenMP spinning against it)",
    )


def setup_run(args: argparse.Namespace) -> Corpus:
    """Apply --threads and prepare the corpus of --work (see prepare_corpus)."""
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return prepare_corpus(Path(args.work), args.scale, args.vocab, args.vocab_size)


def default_out(claim: str) -> Path:
    """benchmarks/results/paper_claims/<claim>_<date>.json."""
    import datetime

    return CLAIM_RESULTS / f"{claim}_{datetime.date.today().isoformat()}.json"


def header(claim: str, device: str, argv: Sequence[str] | None) -> dict:
    """provenance's result header, with the command that reproduces the run (`argv`: the
    script's arguments; None: this process's command line)."""
    result = result_header(f"paper_claims/{claim}", device)
    args = sys.argv[1:] if argv is None else list(argv)
    result["command"] = " ".join(["python", f"benchmarks/paper_claims/{claim}.py", *args])
    return result


def write_outputs(result: dict, out: Path, figure: Any) -> None:
    """The result JSON and the matplotlib `figure` as the PNG beside it, each written to a
    temporary file and renamed (a run cut off while writing keeps the last complete files)."""
    png = out.with_suffix(".png")
    tmp = png.with_name(f".{png.stem}.tmp.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, png)
    write_result(result, out, quiet=True)
    print(f"wrote {out} and {png.name}")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish_claim(
    claim: str,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    seconds: float,
    body: dict,
    plot: Any,
    print_table: Any,
) -> dict:
    """The result JSON (header, the claim's `body`, the settings, wall seconds), written with its
    figure (`plot(result)`), then the table printed last (`print_table(result)`)."""
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    result = {**header(claim, args.device, argv), **body, "settings": settings, "seconds": round(seconds, 1)}
    write_outputs(result, Path(args.out or default_out(claim)), plot(result))
    print_table(result)
    return result


def lm_overrides(
    recipe: Path,
    seed: int,
    steps: int,
    lr: float,
    micro_batch: int,
    warmup_steps: int | None = None,
    checkpoints: int = 0,
) -> list[str]:
    """train/tiny_cpu overrides of one language-modelling run on `recipe`: its data order and
    model seed, steps, peak LR (warm-up: the recipe's unless given), no evaluation, and
    `checkpoints` evenly spaced checkpoints kept (0: only the final model)."""
    overrides = [f"data.recipe={recipe}", f"data.overrides=[seed={seed}]", f"data.micro_batch={micro_batch}",
                 f"seed={seed}", f"steps={steps}", f"optim.lr={lr}"]  # fmt: skip
    if warmup_steps is not None:
        overrides.append(f"optim.warmup_steps={warmup_steps}")
    every = steps // checkpoints if checkpoints else 0
    return [*overrides, "eval_every=0", f"checkpoint_every={every}", f"keep_last={max(1, checkpoints)}"]
