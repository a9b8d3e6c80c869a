r"""Multiple-choice benchmarks scored by log-likelihood: MMLU and eight commonsense tasks.

Prompts, choices and metrics follow EleutherAI lm-evaluation-harness (v0.4 task configs under
``lm_eval/tasks/``: ``mmlu/default``, ``arc``, ``super_glue/boolq``, ``piqa``, ``siqa``,
``hellaswag``, ``openbookqa``, ``winogrande``), re-implemented over the local copies described in
``shared/data/eval/SOURCES.md``. ``D`` is the eval data directory (e.g. ``shared/data/eval``);
commonsense files are looked up as ``D/commonsense/<task>/<variant>/<file>``, then
``D/<task>/<variant>/<file>``. Every continuation starts with lm-eval's target delimiter " ".

Task: file(s) -- context -> continuations

* mmlu: ``D/mmlu/{dev,test}/<subject>_{dev,test}.csv`` -- 5-shot prompt (below) -> " A" .. " D"
* arc_easy, arc_challenge: ``<task>/llm_adapters/test.json`` (3-, 4- and 5-option items all kept)
  -- "Question: {question}\nAnswer:" -> " {option text}"
* boolq: ``boolq/llm_foundry/boolq.jsonl`` -- "{passage}\nQuestion: {question}?\nAnswer:" -> " no", " yes"
* piqa: ``piqa/ybisk/valid.jsonl`` + ``valid-labels.lst`` -- "Question: {goal}\nAnswer:"
  -> " {sol1}", " {sol2}"
* siqa: ``siqa/llm_adapters/test.json`` -- "Q: {context} {question}\nA:" -> " {answerA}" .. " {answerC}"
* hellaswag: ``hellaswag/hellaswag_val.jsonl`` (rowanz format), else the hub's ``Rowan/hellaswag``
  validation split -- preprocess("{activity_label}: {ctx_a} {ctx_b.capitalize()}")
  -> " " + preprocess(ending), where preprocess strips, turns " [title]" into ". ", drops "[...]"
  tags and replaces "  " by " " (one pass)
* openbookqa: ``openbookqa/llm_foundry/openbook_qa.jsonl`` -- "{question_stem}" -> " {option text}"
* winogrande: ``winogrande/llm_foundry/winogrande.jsonl`` -- partial scoring: contexts
  "{sentence before _}{option}" (one per option) -> the shared " {sentence after _, stripped}"

MMLU (lm-eval ``mmlu``, 5-shot, ``first_n`` sampler over the dev split): the context is
"The following are multiple choice questions (with answers) about {subject, '_' -> ' '}.\n\n",
then each of the subject's first five dev rows as
"{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer: {letter}\n\n", then the test row in
the same format, ending in "Answer:". The overall score is micro-averaged over all 14,042 test
items (lm-eval's group aggregation weighted by size).
The LLM-Adapters files embed the options in an instruction ("...question: {q}\n\nAnswer1: ..
Answer2: ..\n\nAnswer format: answer1/answer2/..."); they are parsed back into question and
option texts. WinoGrande uses lm-eval's partial evaluation: the shared continuation is scored after
each option-filled context and the most likely context wins.

Metrics, as lm-eval's ``process_results``: ``acc`` = argmax of summed continuation log-probs;
``acc_norm`` = argmax of log-prob / ``len(choice)``, the choice's length in *characters* without
the leading delimiter (lm-eval computes ``len(str)``; note that ``loglik.score_multiple_choice``
instead divides by UTF-8 bytes of the string it is given). lm-eval's configs list acc and acc_norm
for arc_*, piqa, hellaswag and openbookqa, acc only for mmlu, boolq, siqa and winogrande
(:attr:`ChoiceTask.metrics`); the summary carries acc_norm for every non-partial task anyway.
BOS: lm-eval 0.4.13's ``hf`` backend leaves ``add_bos_token`` at None, i.e. the tokenizer's own
default, and a Llama-3 tokenizer prepends ``<|begin_of_text|>``; our default ``bos=True`` does the
same, so the requests equal lm-eval's (``bos=False`` drops it).
MMLU's four continuations are one token each after the same context, so each item costs one
forward row, not four (``loglik.continuation_logprobs`` shares rows between identical inputs);
the log-probs are those of four separate passes.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from mobilellm_r1.data.records import read_jsonl
from mobilellm_r1.eval import hub as hub_status
from mobilellm_r1.eval.loglik import Request, TextEncoder, argmax, continuation_logprobs, encode_pair
from mobilellm_r1.eval.metrics import mean_accuracy

__all__ = [
    "ARC_CHALLENGE",
    "ARC_EASY",
    "BOOLQ",
    "HELLASWAG",
    "MMLU",
    "OPENBOOKQA",
    "PIQA",
    "SIQA",
    "WINOGRANDE",
    "ChoiceItem",
    "ChoiceTask",
    "evaluate_choice_task",
    "hellaswag_item",
    "hellaswag_preprocess",
    "load_hellaswag",
    "load_mmlu",
    "mmlu_header",
    "parse_adapters_instruction",
    "summarize_choice_records",
]

DELIM = " "  # lm-eval's target_delimiter, prepended to every continuation
LETTERS = "ABCD"
MMLU_SHOTS = 5
SOURCES = "shared/data/eval/SOURCES.md"
_CHUNK_ITEMS = 16  # items per scoring call, per unit of batch_size


@dataclass
class ChoiceItem:
    """One question. Normal items: one context and one continuation per option. Partial-scoring
    items (``partial=True``, WinoGrande): one context per option and a single shared continuation."""

    id: str
    contexts: list[str]
    choices: list[str]
    gold: int
    partial: bool = False
    subject: str | None = None

    @property
    def num_options(self) -> int:
        """Number of options (= requests scored for this item)."""
        return len(self.contexts) if self.partial else len(self.choices)

    def requests(self) -> list[tuple[str, str]]:
        """(context, continuation) text pairs, one per option, in option order."""
        if self.partial:
            return [(ctx, self.choices[0]) for ctx in self.contexts]
        return [(self.contexts[0], cont) for cont in self.choices]


@dataclass(frozen=True)
class ChoiceTask:
    """A named multiple-choice benchmark: its loader and the metrics lm-eval reports for it."""

    name: str
    loader: Callable[[Path], list[ChoiceItem]]
    metrics: tuple[str, ...] = ("acc", "acc_norm")

    def items(self, data_dir: Path | str) -> list[ChoiceItem]:
        """Load every item from ``data_dir`` (FileNotFoundError names the expected path)."""
        return self.loader(Path(data_dir))


# ---------------------------------------------------------------------------------------------
# file helpers


def _missing(task: str, path: Path, also: Path | None = None) -> FileNotFoundError:
    alt = f" (or {also})" if also is not None else ""
    return FileNotFoundError(f"{task}: expected {path}{alt}; see {SOURCES} for where to get it")


def _find(data_dir: Path, task: str, variant: str, filename: str) -> Path:
    """``D/commonsense/<task>/<variant>/<file>``, else ``D/<task>/<variant>/<file>``."""
    candidates = [data_dir / "commonsense" / task / variant / filename, data_dir / task / variant / filename]
    for path in candidates:
        if path.is_file():
            return path
    raise _missing(task, candidates[0], candidates[1])


def _read_json(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _mc_item(index: int, context: str, texts: Iterable[str], gold: int) -> ChoiceItem:
    choices = [DELIM + text for text in texts]
    if not 0 <= gold < len(choices):
        raise ValueError(f"item {index}: gold {gold} outside {len(choices)} choices")
    return ChoiceItem(id=str(index), contexts=[context], choices=choices, gold=gold)


# ---------------------------------------------------------------------------------------------
# MMLU


def _mmlu_question(row: Sequence[str]) -> str:
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, row[1:5], strict=True))
    return f"{row[0].strip()}{options}\nAnswer:"


def _read_mmlu_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row]
    for i, row in enumerate(rows):
        if len(row) != 6 or row[5] not in LETTERS:
            raise ValueError(f"{path}:{i + 1}: expected question,A,B,C,D,answer(A-D), got {row!r}")
    return rows


def mmlu_header(subject: str, shots: Sequence[Sequence[str]]) -> str:
    """Description plus the answered exemplars: everything before the test question."""
    topic = subject.replace("_", " ")
    description = f"The following are multiple choice questions (with answers) about {topic}.\n\n"
    return description + "".join(f"{_mmlu_question(row)}{DELIM}{row[5]}\n\n" for row in shots)


def load_mmlu(data_dir: Path | str, split: str = "test", shots: int = MMLU_SHOTS) -> list[ChoiceItem]:
    """MMLU items from ``D/mmlu/<split>/<subject>_<split>.csv`` with ``shots`` exemplars taken from
    the start of ``D/mmlu/dev/<subject>_dev.csv``; subjects in file-name order (works for the
    synthetic ``synthetic_world`` subject too)."""
    root = Path(data_dir) / "mmlu"
    files = sorted((root / split).glob(f"*_{split}.csv"))
    if not files:
        raise _missing("mmlu", root / split / f"<subject>_{split}.csv")
    items: list[ChoiceItem] = []
    for path in files:
        subject = path.name[: -len(f"_{split}.csv")]
        dev = root / "dev" / f"{subject}_dev.csv"
        if shots and not dev.is_file():
            raise _missing("mmlu", dev)
        header = mmlu_header(subject, _read_mmlu_csv(dev)[:shots] if shots else [])
        for i, row in enumerate(_read_mmlu_csv(path)):
            items.append(
                ChoiceItem(
                    id=f"{subject}/{i}",
                    contexts=[header + _mmlu_question(row)],
                    choices=[DELIM + letter for letter in LETTERS],
                    gold=LETTERS.index(row[5]),
                    subject=subject,
                )
            )
    return items


# ---------------------------------------------------------------------------------------------
# LLM-Adapters instruction format (ARC, SIQA)

_ADAPTERS_PREFIX = "Please choose the correct answer to the question: "
_OPTION_SPLIT = re.compile(r"(?:^| )Answer(\d+): ")


def parse_adapters_instruction(instruction: str) -> tuple[str, list[str]]:
    """(question, option texts) from "...question: {q}\\n\\nAnswer1: a Answer2: b\\n\\nAnswer format: ..."."""
    if not instruction.startswith(_ADAPTERS_PREFIX):
        raise ValueError(f"unexpected instruction prefix: {instruction[:60]!r}")
    question, options, answer_format = instruction[len(_ADAPTERS_PREFIX) :].rsplit("\n\n", 2)
    count = len(answer_format.removeprefix("Answer format: ").split("/"))
    parts = _OPTION_SPLIT.split(options)
    numbers = [int(n) for n in parts[1::2]]
    if parts[0] or numbers != list(range(1, count + 1)):
        raise ValueError(f"cannot split {count} options from {options!r}")
    return question, parts[2::2]


def _adapters_items(data_dir: Path, task: str, prompt: Callable[[str], str]) -> list[ChoiceItem]:
    items = []
    for i, rec in enumerate(_read_json(_find(data_dir, task, "llm_adapters", "test.json"))):
        question, options = parse_adapters_instruction(rec["instruction"])
        items.append(_mc_item(i, prompt(question), options, int(rec["answer"].removeprefix("answer")) - 1))
    return items


def _arc_loader(task: str) -> Callable[[Path], list[ChoiceItem]]:
    def load(data_dir: Path) -> list[ChoiceItem]:
        return _adapters_items(data_dir, task, lambda q: f"Question: {q}\nAnswer:")

    return load


def _load_siqa(data_dir: Path) -> list[ChoiceItem]:
    # LLM-Adapters joins SIQA's context and question with one space, as lm-eval's prompt does.
    return _adapters_items(data_dir, "siqa", lambda q: f"Q: {q}\nA:")


# ---------------------------------------------------------------------------------------------
# llm-foundry files (BoolQ, OpenBookQA, WinoGrande) and PIQA


def _load_boolq(data_dir: Path) -> list[ChoiceItem]:
    items = []
    for i, rec in enumerate(read_jsonl(_find(data_dir, "boolq", "llm_foundry", "boolq.jsonl"))):
        query = rec["query"]  # "Passage: {passage}\nQuestion: {question}?"
        if not query.startswith("Passage: ") or not query.endswith("?") or rec["choices"] != ["no", "yes"]:
            raise ValueError(f"boolq item {i}: unexpected record layout")
        items.append(_mc_item(i, query.removeprefix("Passage: ") + "\nAnswer:", rec["choices"], rec["gold"]))
    return items


def _load_openbookqa(data_dir: Path) -> list[ChoiceItem]:
    records = read_jsonl(_find(data_dir, "openbookqa", "llm_foundry", "openbook_qa.jsonl"))
    return [_mc_item(i, rec["query"], rec["choices"], rec["gold"]) for i, rec in enumerate(records)]


def _load_winogrande(data_dir: Path) -> list[ChoiceItem]:
    items = []
    for i, rec in enumerate(read_jsonl(_find(data_dir, "winogrande", "llm_foundry", "winogrande.jsonl"))):
        contexts, gold = list(rec["context_options"]), int(rec["gold"])
        if not 0 <= gold < len(contexts):
            raise ValueError(f"winogrande item {i}: gold {gold} outside {len(contexts)} contexts")
        cont = DELIM + rec["continuation"]
        items.append(ChoiceItem(id=str(i), contexts=contexts, choices=[cont], gold=gold, partial=True))
    return items


def _load_piqa(data_dir: Path) -> list[ChoiceItem]:
    records = read_jsonl(_find(data_dir, "piqa", "ybisk", "valid.jsonl"))
    labels_path = _find(data_dir, "piqa", "ybisk", "valid-labels.lst")
    labels = [int(line) for line in labels_path.read_text(encoding="utf-8").split()]
    if len(labels) != len(records):
        raise ValueError(f"piqa: {len(records)} questions but {len(labels)} labels")
    return [
        _mc_item(i, f"Question: {rec['goal']}\nAnswer:", [rec["sol1"], rec["sol2"]], label)
        for i, (rec, label) in enumerate(zip(records, labels, strict=True))
    ]


# ---------------------------------------------------------------------------------------------
# HellaSwag

HELLASWAG_FILE = "hellaswag_val.jsonl"
HELLASWAG_HUB = "Rowan/hellaswag"


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: strip, " [title]" -> ". ", drop "[...]" tags, collapse "  "."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(index: int, row: dict[str, Any]) -> ChoiceItem:
    """One rowanz/HF HellaSwag row (``activity_label, ctx_a, ctx_b, endings, label``) as an item."""
    query = hellaswag_preprocess(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    return _mc_item(index, query, [hellaswag_preprocess(e) for e in row["endings"]], int(row["label"]))


def _hub_hellaswag() -> list[dict[str, Any]]:
    import datasets  # heavy import, only when the local file is missing

    try:
        return list(datasets.load_dataset(HELLASWAG_HUB, split="validation"))
    except Exception:  # script-based repo: fall back to the hub's auto-converted parquet branch
        return list(datasets.load_dataset(HELLASWAG_HUB, split="validation", revision="refs/convert/parquet"))


def load_hellaswag(data_dir: Path | str, *, hub: bool = True) -> list[ChoiceItem]:
    """HellaSwag validation (10,042 rows) from ``D/commonsense/hellaswag/hellaswag_val.jsonl`` or
    ``D/hellaswag/hellaswag_val.jsonl`` (rowanz format), else (``hub=True``) ``Rowan/hellaswag``.

    FileNotFoundError says why when neither works. The hub is asked only if :mod:`.hub` says it can
    answer (an offline switch means the local hub cache only; an unreachable hub fails at once
    instead of after the client's retries)."""
    data_dir = Path(data_dir)
    local = [data_dir / "commonsense" / "hellaswag" / HELLASWAG_FILE, data_dir / "hellaswag" / HELLASWAG_FILE]
    path = next((p for p in local if p.is_file()), None)
    if path is not None:
        return [hellaswag_item(i, row) for i, row in enumerate(read_jsonl(path))]
    if not hub:
        raise _missing("hellaswag", local[0], local[1])
    where = f"hellaswag: not in {data_dir} (expected {local[0]} or {local[1]})"
    offline = hub_status.offline_variable()
    unreachable = None if offline else hub_status.unreachable_reason()
    if unreachable:
        raise FileNotFoundError(
            f"{where} and the hub is unreachable ({unreachable}); set HF_HUB_OFFLINE=1 to use a cached "
            f"copy; see {SOURCES}"
        )
    try:
        rows = _hub_hellaswag()
    except Exception as exc:
        cache = f" in the local hub cache ({offline} is set)" if offline else f" from {HELLASWAG_HUB}"
        raise FileNotFoundError(
            f"{where} and not loadable{cache}: {type(exc).__name__}: {exc}; see {SOURCES}"
        ) from exc
    return [hellaswag_item(i, row) for i, row in enumerate(rows)]


# The tasks (listed by name in mobilellm_r1.eval.registry)
MMLU = ChoiceTask("mmlu", load_mmlu, ("acc",))
ARC_EASY = ChoiceTask("arc_easy", _arc_loader("arc_easy"))
ARC_CHALLENGE = ChoiceTask("arc_challenge", _arc_loader("arc_challenge"))
BOOLQ = ChoiceTask("boolq", _load_boolq, ("acc",))
PIQA = ChoiceTask("piqa", _load_piqa)
SIQA = ChoiceTask("siqa", _load_siqa, ("acc",))
HELLASWAG = ChoiceTask("hellaswag", load_hellaswag)
OPENBOOKQA = ChoiceTask("openbookqa", _load_openbookqa)
WINOGRANDE = ChoiceTask("winogrande", _load_winogrande, ("acc",))


# ---------------------------------------------------------------------------------------------
# scoring


def _truncate(request: Request, max_length: int | None) -> Request:
    """lm-eval's left truncation: keep the last ``max_length + 1`` tokens of context + continuation."""
    ctx, cont = request
    excess = len(ctx) + len(cont) - (max_length + 1) if max_length is not None else 0
    if excess <= 0:
        return request
    if excess >= len(ctx):
        raise ValueError(f"continuation of {len(cont)} tokens does not fit max_length={max_length}")
    return ctx[excess:], cont


def _record(item: ChoiceItem, logprobs: list[float]) -> dict[str, Any]:
    pred = argmax(logprobs)
    rec: dict[str, Any] = {"id": item.id, "gold": item.gold, "pred": pred, "logprobs": logprobs}
    rec["acc"] = float(pred == item.gold)
    if not item.partial:
        lengths = [max(len(c.removeprefix(DELIM)), 1) for c in item.choices]
        pred_norm = argmax([lp / n for lp, n in zip(logprobs, lengths, strict=True)])
        rec["pred_norm"], rec["acc_norm"] = pred_norm, float(pred_norm == item.gold)
    if item.subject is not None:
        rec["subject"] = item.subject
    return rec


def _score_chunk(
    items: Sequence[ChoiceItem],
    model: nn.Module,
    tokenizer: TextEncoder,
    batch_size: int,
    bos: bool,
    max_length: int | None,
) -> list[dict[str, Any]]:
    """Encode every request of ``items``, score them in one batched call, split per item."""
    requests = [
        _truncate(encode_pair(tokenizer, ctx, cont, bos=bos), max_length)
        for item in items
        for ctx, cont in item.requests()
    ]
    scores = [lp for lp, _ in continuation_logprobs(model, requests, batch_size=batch_size)]
    records, offset = [], 0
    for item in items:
        records.append(_record(item, scores[offset : offset + item.num_options]))
        offset += item.num_options
    return records


def summarize_choice_records(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Flat summary: acc, acc_se, acc_norm, acc_norm_se (when every record has it), n, and
    ``acc/<subject>`` for records carrying a subject (MMLU; overall acc is the micro average)."""
    acc, acc_se = mean_accuracy([r["acc"] for r in records])
    summary = {"acc": acc, "acc_se": acc_se}
    if all("acc_norm" in r for r in records):
        summary["acc_norm"], summary["acc_norm_se"] = mean_accuracy([r["acc_norm"] for r in records])
    summary["n"] = float(len(records))
    subjects = sorted({r["subject"] for r in records if "subject" in r})
    for subject in subjects:
        summary[f"acc/{subject}"] = mean_accuracy([r["acc"] for r in records if r.get("subject") == subject])[
            0
        ]
    return summary


def evaluate_choice_task(
    task: ChoiceTask,
    items: Sequence[ChoiceItem],
    model: nn.Module,
    tokenizer: TextEncoder,
    *,
    batch_size: int = 16,
    bos: bool = True,
    max_length: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Score ``items`` of ``task``; returns (summary, per-item records).

    Items are processed in chunks of ``16 * batch_size`` whose requests all go through one
    ``continuation_logprobs`` call (length-sorted there, ``batch_size`` distinct model inputs per
    forward; requests with the same input, as an MMLU item's four letters, share one row).
    ``max_length`` left-truncates context + continuation as lm-eval does (None: no truncation).
    ``progress`` is called after each chunk with the number of items just finished (so a tqdm
    bar's ``update`` can be passed). Records hold id, gold, pred, logprobs, acc, and for
    non-partial items pred_norm and acc_norm, plus subject for MMLU; see
    :func:`summarize_choice_records` for the summary (fractions in [0, 1]).
    """
    if not items:
        raise ValueError(f"{task.name}: no items to evaluate")
    chunk = max(1, _CHUNK_ITEMS * batch_size)
    records: list[dict[str, Any]] = []
    for lo in range(0, len(items), chunk):
        part = items[lo : lo + chunk]
        records.extend(_score_chunk(part, model, tokenizer, batch_size, bos, max_length))
        if progress is not None:
            progress(len(part))
    return summarize_choice_records(records), records
