"""Assemble every split of the synthetic corpus in memory, keeping held-out items out of training.

Order matters for the held-out guarantee: the world and its questions are built first, then the
eval sets and probe sets, whose identities and texts are registered in a `Guard`; every training
record (pretraining, noise, SFT) is then drawn from its own seeded stream and redrawn whenever
the guard rejects it (same identity as a held-out item, an eval question text inside it, or the
exact text of a probe document).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import code, evalsets, knowledge, noise, sft
from . import math as smath
from ._util import derive_rng, split_counts
from .config import SynthConfig
from .knowledge import Question
from .world import World, build_world

Made = tuple[Any, Any, str, dict[str, Any]]  # (dedupe key, held-out key, text, record)


@dataclass
class Guard:
    """Held-out identities, strings that may not occur in training texts, and blocked documents.

    Held-out strings are indexed by one whitespace-delimited inner token (a token with
    whitespace on both sides inside the string): any text containing the string also contains
    that token as a whole token of `text.split()`, so only strings sharing a token with the
    text need the full substring test. Strings without an inner token are tested against
    every text.
    """

    keys: set[Any] = field(default_factory=set)
    docs: set[str] = field(default_factory=set)
    anchored: dict[str, list[str]] = field(default_factory=dict)
    unanchored: list[str] = field(default_factory=list)

    def add_texts(self, texts: list[str]) -> None:
        """Register strings that no training text may contain."""
        for text in texts:
            tokens = text.split()
            start = 0 if text[:1].isspace() else 1
            end = len(tokens) if text[-1:].isspace() else len(tokens) - 1
            inner = tokens[start:end]
            if not inner:
                self.unanchored.append(text)
                continue
            anchor = max(inner, key=lambda w: (any(c.isdigit() for c in w), len(w)))
            self.anchored.setdefault(anchor, []).append(text)

    def leaks(self, text: str) -> bool:
        """Whether `text` contains a registered held-out string."""
        for token in set(text.split()):
            for held in self.anchored.get(token, ()):
                if held in text:
                    return True
        return any(held in text for held in self.unanchored)

    def allows(self, key: Any, text: str) -> bool:
        """Whether a training item with this held-out key and text may be used."""
        if key is not None and key in self.keys:
            return False
        return text not in self.docs and not self.leaks(text)


@dataclass
class Output:
    """One file to write: relative path, format ("jsonl", "jsonl.gz" or "csv") and rows."""

    path: str
    fmt: str
    rows: list[Any]


def collect(n: int, make: Callable[[int], Made], guard: Guard, what: str) -> list[dict[str, Any]]:
    """Draw `make(i)` (i = index of the next record) until `n` distinct, guard-approved records."""
    seen: set[Any] = set()
    out: list[dict[str, Any]] = []
    for _ in range(100 * n + 1000):
        if len(out) >= n:
            return out
        dedupe, held, text, record = make(len(out))
        if dedupe in seen or not guard.allows(held, text):
            continue
        seen.add(dedupe)
        out.append(record)
    if len(out) < n:
        raise RuntimeError(
            f"could only generate {len(out)} of {n} {what} records; lower the size or raise n_entities"
        )
    return out


def _problems(n: int, rng: random.Random, guard: Guard, word_only: bool = False) -> list[smath.MathProblem]:
    """`n` distinct problems not held out, levels cycling 1..5 (or GSM8K-style word problems)."""

    def make(i: int) -> Made:
        """One candidate record for position `i`."""
        level = None if word_only else smath.LEVELS[i % len(smath.LEVELS)]
        p = smath.make_problem(rng, level, word_only=word_only)
        return p.key, p.key, "", {"problem": p}

    return [r["problem"] for r in collect(n, make, guard, "math")]


CODE_EVAL_SPLIT = ("code-identity-split", True)


def code_split_key(task: code.CodeTask) -> tuple[str, bool]:
    """Held-out key of a code task: which side of the identity split it is on."""
    return ("code-identity-split", code.is_eval_identity(task))


def _tasks(n: int, rng: random.Random, for_eval: bool) -> list[code.CodeTask]:
    """`n` distinct code tasks from the eval or the training side of the identity split."""

    def make(_: int) -> Made:
        """One candidate record for position `_`."""
        t = code.make_task(rng)
        held = None if code.is_eval_identity(t) == for_eval else "wrong-side"
        return repr((t.identity, t.cases)), held, "", {"task": t}

    return [r["task"] for r in collect(n, make, Guard(keys={"wrong-side"}), "code")]


# ------------------------------------------------------------------------------ eval + probe
def build_eval(cfg: SynthConfig, qs: list[Question], covered: set[str], guard: Guard) -> list[Output]:
    """GSM8K, MATH500, HumanEval and MMLU files; registers their items in the guard."""
    gsm = _problems(cfg.eval_math, derive_rng(cfg.seed, "eval/gsm8k"), guard, word_only=True)
    guard.keys.update(p.key for p in gsm)
    m500 = _problems(cfg.eval_math, derive_rng(cfg.seed, "eval/math500"), guard)
    guard.keys.update(p.key for p in m500)
    guard.add_texts([p.question for p in gsm + m500])
    tasks = _tasks(cfg.eval_code, derive_rng(cfg.seed, "eval/humaneval"), for_eval=True)
    guard.keys.add(CODE_EVAL_SPLIT)
    guard.add_texts([t.prompt() for t in tasks])

    rng = derive_rng(cfg.seed, "eval/mmlu")
    pool = [q for q in qs if q.entity in covered]
    rng.shuffle(pool)
    need = evalsets.MMLU_DEV_SIZE + cfg.eval_knowledge
    if len(pool) < need:
        raise ValueError(
            f"only {len(pool)} knowledge questions available for {need} eval items; raise n_entities"
        )
    held = pool[:need]
    guard.keys.update(q.key for q in held)
    guard.add_texts([q.question for q in held])
    outputs = [
        Output("eval/gsm8k/test.jsonl", "jsonl", [evalsets.gsm8k_record(p) for p in gsm]),
        Output("eval/math500/test.jsonl", "jsonl", [evalsets.math500_record(p, i) for i, p in enumerate(m500)]),
        Output("eval/structured/gsm8k.jsonl", "jsonl", [evalsets.structured_record(p, i) for i, p in enumerate(gsm)]),
        Output("eval/structured/math500.jsonl", "jsonl", [evalsets.structured_record(p, i) for i, p in enumerate(m500)]),
        Output("eval/humaneval/HumanEval.jsonl.gz", "jsonl.gz",
               [code.humaneval_record(t, f"SynthHumanEval/{i}") for i, t in enumerate(tasks)]),
    ]  # fmt: skip
    side = []
    for split, split_qs in evalsets.mmlu_splits(held, cfg.eval_knowledge).items():
        rows = [evalsets.mmlu_row(q, rng) for q in split_qs]
        side.extend(
            {"split": split, **evalsets.mmlu_structured(q, r)} for q, r in zip(split_qs, rows, strict=True)
        )
        outputs.append(Output(f"eval/mmlu/{split}/{evalsets.MMLU_SUBJECT}_{split}.csv", "csv", rows))
    outputs.append(Output("eval/structured/mmlu.jsonl", "jsonl", side))
    return outputs


def build_probe(cfg: SynthConfig, world: World, guard: Guard) -> list[Output]:
    """Per-domain probing documents; their problems/texts are then blocked from training."""
    n = cfg.probe_per_domain
    rng = derive_rng(cfg.seed, "probe/math")
    problems = _problems(n, rng, guard)
    guard.keys.update(p.key for p in problems)
    math_texts = [smath.document_text(p, rng) for p in problems]
    rng = derive_rng(cfg.seed, "probe/code")
    code_texts = [code.document_text(t, rng) for t in _tasks(n, rng, for_eval=False)]
    rng = derive_rng(cfg.seed, "probe/knowledge")
    know = collect(
        n, lambda _: _text_item(evalsets.knowledge_probe_text(world, rng)), guard, "knowledge probe"
    )
    outputs = []
    for domain, texts in (
        ("code", code_texts),
        ("math", math_texts),
        ("knowledge", [r["text"] for r in know]),
    ):
        guard.docs.update(texts)
        outputs.append(
            Output(
                f"probe/{domain}.jsonl",
                "jsonl",
                [evalsets.probe_record(domain, i, t) for i, t in enumerate(texts)],
            )
        )
    return outputs


def _text_item(text: str) -> Made:
    """A record that is just a text (deduplicated by its text)."""
    return text, None, text, {"text": text}


# ------------------------------------------------------------------------------ training
def _math_docs(cfg: SynthConfig, guard: Guard) -> list[dict[str, Any]]:
    """Pretraining math documents, levels cycling 1..5."""
    rng = derive_rng(cfg.seed, "pretrain/math")

    def make(i: int) -> Made:
        """One candidate record for position `i`."""
        p = smath.make_problem(rng, smath.LEVELS[i % len(smath.LEVELS)])
        text = smath.document_text(p, rng)
        return (
            p.key,
            p.key,
            text,
            {"id": f"math-{i:06d}", "text": text, "quality": "high", "domain": "math", **p.record()},
        )

    return collect(cfg.math_docs, make, guard, "pretrain math")


def _code_docs(cfg: SynthConfig, guard: Guard) -> list[dict[str, Any]]:
    """Pretraining code documents (function, docstring, asserts)."""
    rng = derive_rng(cfg.seed, "pretrain/code")

    def make(i: int) -> Made:
        """One candidate record for position `i`."""
        t = code.make_task(rng)
        text = code.document_text(t, rng)
        record = {
            "id": f"code-{i:06d}",
            "text": text,
            "quality": "high",
            "domain": "code",
            "template": t.template,
            "entry_point": t.name,
        }
        return repr((t.identity, t.cases)), code_split_key(t), text, record

    return collect(cfg.code_docs, make, guard, "pretrain code")


def _knowledge_doc(
    world: World, rng: random.Random, entity: Any, train_qs: list[Question]
) -> tuple[str, str, str]:
    """(doc type, entity name, text): full coverage of `entity`, or a random document if None."""
    if entity is None:
        kind = rng.choices(["paragraph", "overview", "biography", "qa", "mc"], weights=[3, 1, 1, 2.5, 2.5])[0]
        if kind in ("qa", "mc"):
            qs = rng.sample(train_qs, min(len(train_qs), rng.randint(2, 5)))
            return kind, "", knowledge.qa_doc(qs) if kind == "qa" else knowledge.mc_doc(qs, rng)
        pool = {"overview": "country", "biography": "person"}.get(kind)
        entity = rng.choice(world.of_kind(pool) if pool else world.entities)
        if kind == "paragraph":
            attrs = list(entity.attrs)
            keep = [attrs[0], *[a for a in attrs[1:] if rng.random() < 0.7]]
            return kind, entity.name, knowledge.paragraph(entity, rng, keep)
    if entity.kind == "country":
        return "overview", entity.name, knowledge.overview(world, entity, rng)
    if entity.kind == "person":
        return "biography", entity.name, knowledge.biography(world, entity, rng)
    return "paragraph", entity.name, knowledge.paragraph(entity, rng)


def _knowledge_docs(
    cfg: SynthConfig, world: World, order: list[Any], train_qs: list[Question], guard: Guard
) -> list[dict[str, Any]]:
    """Knowledge documents: one full-coverage document per entity first, then a random mix."""
    rng = derive_rng(cfg.seed, "pretrain/knowledge")

    def make(i: int) -> Made:
        """One candidate record for position `i`."""
        doc_type, name, text = _knowledge_doc(world, rng, order[i] if i < len(order) else None, train_qs)
        record = {
            "id": f"knowledge-{i:06d}",
            "text": text,
            "quality": "high",
            "domain": "knowledge",
            "doc_type": doc_type,
            "entity": name,
        }
        return text, None, text, record

    return collect(cfg.knowledge_docs, make, guard, "pretrain knowledge")


def _sft(cfg: SynthConfig, world: World, train_qs: list[Question], guard: Guard) -> list[Output]:
    """General and reasoning SFT conversations."""
    rng = derive_rng(cfg.seed, "sft/general")

    def general(i: int) -> Made:
        """One candidate record for position `i`."""
        messages, meta = sft.general_record(world, train_qs, rng)
        text = sft.conversation_text(messages)
        return text, None, text, {"id": f"sft_general-{i:06d}", "messages": messages, "meta": meta}

    rng_r = derive_rng(cfg.seed, "sft/reasoning")

    def reasoning(i: int) -> Made:
        """One candidate record for position `i`."""
        if i % 2 == 0:
            p = smath.make_problem(rng_r, smath.LEVELS[(i // 2) % len(smath.LEVELS)])
            (messages, meta), held = sft.math_record(p, rng_r), p.key
        else:
            t = code.make_task(rng_r)
            (messages, meta), held = sft.code_record(t, rng_r), code_split_key(t)
        text = sft.conversation_text(messages)
        return text, held, text, {"id": f"sft_reasoning-{i:06d}", "messages": messages, "meta": meta}

    return [
        Output("sft/general.jsonl", "jsonl", collect(cfg.sft_general, general, guard, "sft general")),
        Output("sft/reasoning.jsonl", "jsonl", collect(cfg.sft_reasoning, reasoning, guard, "sft reasoning")),
    ]


def build_all(cfg: SynthConfig) -> list[Output]:
    """Every output file of the corpus, in a fixed order."""
    world = build_world(derive_rng(cfg.seed, "world"), cfg.n_entities)
    qs = knowledge.questions(world, derive_rng(cfg.seed, "questions"))
    order = list(world.entities)
    derive_rng(cfg.seed, "coverage").shuffle(order)
    order = order[: cfg.knowledge_docs]
    guard = Guard()
    outputs = build_eval(cfg, qs, {e.name for e in order}, guard)
    outputs += build_probe(cfg, world, guard)
    train_qs = [q for q in qs if q.key not in guard.keys]
    outputs += [
        Output("pretrain/math.jsonl", "jsonl", _math_docs(cfg, guard)),
        Output("pretrain/code.jsonl", "jsonl", _code_docs(cfg, guard)),
        Output("pretrain/knowledge.jsonl", "jsonl", _knowledge_docs(cfg, world, order, train_qs, guard)),
    ]
    accept = lambda text: guard.allows(None, text)  # noqa: E731
    for kind, n in zip(noise.NOISE_KINDS, split_counts(cfg.noise_docs, len(noise.NOISE_KINDS)), strict=True):
        rows = noise.noise_records(kind, n, derive_rng(cfg.seed, f"noise/{kind}"), world, accept)
        outputs.append(Output(f"pretrain/noise_{kind}.jsonl", "jsonl", rows))
    return outputs + _sft(cfg, world, train_qs, guard)
