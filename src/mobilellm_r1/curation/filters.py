"""Quality filters: heuristic rules (Gopher / C4 / FineWeb) and a quality classifier (FineWeb-Edu style).

Heuristics (:class:`HeuristicConfig`, :func:`heuristic_failures`) are the document-level rules of
Gopher (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher", App. A.1.1), the C4 rules (Raffel et al. 2020, Sec. 2.2) and FineWeb's extra rules (Penedo
et al. 2024, "The FineWeb Datasets", Sec. 3.4; thresholds as in datatrove's filters).  Words are
whitespace-separated tokens; lines are the non-blank lines.  Every threshold can be set to ``None``
to switch its rule off.  The defaults are the sources' values, which were set for English web
pages: on short documents, code and math they reject much good text (:meth:`HeuristicConfig.mixed`
is a variant for such corpora).

The classifier (:class:`QualityClassifier`) is any Hugging Face sequence-classification checkpoint,
scored like the FineWeb-Edu classifier (Penedo et al. 2024): a single regression logit is the score
(0..5 for FineWeb-Edu), optionally rounded to FineWeb-Edu's ``int_score`` =
``int(round(clamp(score, 0, 5)))``; a multi-class head gives the expected label value or the value of
the argmax label.  The MobileLLM-R1 paper keeps documents with score > 4 for its probing sets.

:func:`run_filter` applies both to JSONL files (read and written with :mod:`mobilellm_r1.data.records`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..data.records import JsonlWriter, PathLike, optional_writer, read_records
from ..model.model import module_device
from .progress import count_records, progress_bar


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ====================================================================== heuristic rules
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Terminal punctuation of C4 / datatrove's C4 filter (END_PUNCTUATION), plus the ellipsis character.
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "…")
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "‣", "⁃", "◦", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
# C4 drops lines holding these (case-insensitive) phrases: JavaScript warnings and policy notices.
C4_POLICY_PHRASES = (
    "javascript",
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
GOPHER_TOP_NGRAMS = ((2, 0.20), (3, 0.18), (4, 0.16))
GOPHER_DUP_NGRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


@dataclass(frozen=True)
class HeuristicConfig:
    """Thresholds of the heuristic rules (``None`` switches a rule off); the rule name is in brackets.

    Gopher (Rae et al. 2021, App. A.1.1):
        min_words / max_words [word_count]: keep 50 <= words <= 100,000.
        min_mean_word_length / max_mean_word_length [mean_word_length]: keep 3 <= mean chars <= 10.
        max_symbol_word_ratio [symbol_ratio]: reject when ('#' + ellipses) / words > 0.1.
        min_alpha_word_fraction [alpha_words]: reject when < 80% of words hold a letter.
        min_stop_words [stop_words]: reject with fewer than 2 occurrences of the, be, to, of, and,
            that, have, with (occurrences, as datatrove counts them).
        max_bullet_line_fraction [bullet_lines]: reject when > 90% of lines start with a bullet.
        max_ellipsis_line_fraction [ellipsis_lines]: reject when > 30% of lines end with an ellipsis.
        max_dup_line_fraction [dup_lines]: reject when > 30% of lines repeat an earlier line.
        max_dup_line_char_fraction [dup_line_chars]: ... or > 20% of line characters are in them.
        top_ngram_char_fractions [top_ngram]: (n, max) pairs: reject when the most frequent word
            n-gram covers more than max of the word characters (2: 0.20, 3: 0.18, 4: 0.16).
        dup_ngram_char_fractions [dup_ngram]: (n, max) pairs: reject when word n-grams occurring
            more than once cover more than max of the word characters (5: 0.15 ... 10: 0.10).
    FineWeb (Penedo et al. 2024, Sec. 3.4; C4's terminal-punctuation rule made document-level):
        min_punct_line_fraction [line_punct]: reject when the fraction of lines ending with terminal
            punctuation (. ! ? " ' …) is <= 0.12.
    C4 (Raffel et al. 2020):
        max_policy_line_fraction [policy_lines]: C4 deletes lines that mention JavaScript or a
            cookie / privacy / terms-of-use policy; here a document is rejected when more than this
            fraction of its lines are such lines (0.3: our choice, C4 has no document threshold).
    """

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    min_alpha_word_fraction: float | None = 0.8
    min_stop_words: int | None = 2
    max_bullet_line_fraction: float | None = 0.9
    max_ellipsis_line_fraction: float | None = 0.3
    max_dup_line_fraction: float | None = 0.3
    max_dup_line_char_fraction: float | None = 0.2
    top_ngram_char_fractions: tuple[tuple[int, float], ...] | None = GOPHER_TOP_NGRAMS
    dup_ngram_char_fractions: tuple[tuple[int, float], ...] | None = GOPHER_DUP_NGRAMS
    min_punct_line_fraction: float | None = 0.12
    max_policy_line_fraction: float | None = 0.3

    @classmethod
    def mixed(cls) -> HeuristicConfig:
        """A variant for corpora of short prose, code and math (such as the synthetic corpus).

        Keeps the rules that separate noise from text of any domain (mean word length, symbols,
        bullet / ellipsis / duplicate / policy lines, stop words but at least 1 instead of 2) and
        drops those that also reject good code and math: 50 words minimum (5 here), letters in 80%
        of words, terminal punctuation on lines and the n-gram repetition rules (code repeats its
        test calls).  On the synthetic corpus (seed 0) it rejects 100% of gibberish, ~60% of spam
        and boilerplate and 0-7% of the high-quality math / code / knowledge documents; the
        defaults reject all noise but also 72-95% of the high-quality documents.
        """
        return cls(
            min_words=5,
            min_stop_words=1,
            min_alpha_word_fraction=None,
            min_punct_line_fraction=None,
            top_ngram_char_fractions=None,
            dup_ngram_char_fractions=None,
        )


RULES = (
    "word_count",
    "mean_word_length",
    "symbol_ratio",
    "alpha_words",
    "stop_words",
    "bullet_lines",
    "ellipsis_lines",
    "dup_lines",
    "dup_line_chars",
    "top_ngram",
    "dup_ngram",
    "line_punct",
    "policy_lines",
)


def _outside(value: float, low: float | None, high: float | None) -> bool:
    return (low is not None and value < low) or (high is not None and value > high)


def _dup_lines(lines: list[str]) -> tuple[float, float]:
    """(fraction of lines equal to an earlier line, fraction of line characters in those lines)."""
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines, dup_chars = dup_lines + 1, dup_chars + len(line)
        seen.add(line)
    total_chars = sum(len(line) for line in lines)
    return dup_lines / len(lines), dup_chars / max(total_chars, 1)


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Fraction of word characters covered by the most frequent word n-gram (Gopher)."""
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(len(w) for w in gram) / max(sum(len(w) for w in words), 1)


def dup_ngram_char_fraction(words: list[str], n: int) -> float:
    """Fraction of word characters inside word n-grams that occur more than once (Gopher)."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    dup = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
    return dup / max(sum(len(w) for w in words), 1)


def _word_failures(words: list[str], cfg: HeuristicConfig) -> list[str]:
    failed = []
    if _outside(len(words), cfg.min_words, cfg.max_words):
        failed.append("word_count")
    if not words:
        return failed + ["mean_word_length"] * (cfg.min_mean_word_length is not None)
    mean_len = sum(len(w) for w in words) / len(words)
    if _outside(mean_len, cfg.min_mean_word_length, cfg.max_mean_word_length):
        failed.append("mean_word_length")
    if cfg.max_symbol_word_ratio is not None:
        symbols = sum(w.count("#") + sum(w.count(e) for e in ELLIPSES) for w in words)
        if symbols / len(words) > cfg.max_symbol_word_ratio:
            failed.append("symbol_ratio")
    if cfg.min_alpha_word_fraction is not None:
        alpha = sum(any(c.isalpha() for c in w) for w in words)
        if alpha / len(words) < cfg.min_alpha_word_fraction:
            failed.append("alpha_words")
    stops = sum(w.lower() in GOPHER_STOP_WORDS for w in words)
    if cfg.min_stop_words is not None and stops < cfg.min_stop_words:
        failed.append("stop_words")
    return failed


def _ngram_failures(words: list[str], cfg: HeuristicConfig) -> list[str]:
    failed = []
    if cfg.top_ngram_char_fractions and any(
        top_ngram_char_fraction(words, n) > limit for n, limit in cfg.top_ngram_char_fractions
    ):
        failed.append("top_ngram")
    if cfg.dup_ngram_char_fractions and any(
        dup_ngram_char_fraction(words, n) > limit for n, limit in cfg.dup_ngram_char_fractions
    ):
        failed.append("dup_ngram")
    return failed


def _line_failures(lines: list[str], cfg: HeuristicConfig) -> list[str]:
    if not lines:
        return []
    failed, n = [], len(lines)
    fractions = {
        "bullet_lines": (cfg.max_bullet_line_fraction, lambda s: s.lstrip().startswith(BULLETS)),
        "ellipsis_lines": (cfg.max_ellipsis_line_fraction, lambda s: s.rstrip().endswith(ELLIPSES)),
        "policy_lines": (
            cfg.max_policy_line_fraction,
            lambda s: any(p in s.lower() for p in C4_POLICY_PHRASES),
        ),
    }
    for name, (limit, test) in fractions.items():
        if limit is not None and sum(map(test, lines)) / n > limit:
            failed.append(name)
    dup_frac, dup_char_frac = _dup_lines(lines)
    if cfg.max_dup_line_fraction is not None and dup_frac > cfg.max_dup_line_fraction:
        failed.append("dup_lines")
    if cfg.max_dup_line_char_fraction is not None and dup_char_frac > cfg.max_dup_line_char_fraction:
        failed.append("dup_line_chars")
    if cfg.min_punct_line_fraction is not None:
        punct = sum(s.rstrip().endswith(TERMINAL_PUNCTUATION) for s in lines) / n
        if punct <= cfg.min_punct_line_fraction:
            failed.append("line_punct")
    return failed


def heuristic_failures(text: str, cfg: HeuristicConfig | None = None) -> list[str]:
    """Names of every rule (see :data:`RULES`) that ``text`` fails; empty when it passes."""
    cfg = cfg if cfg is not None else HeuristicConfig()
    words = text.split()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    failed = _word_failures(words, cfg) + _ngram_failures(words, cfg) + _line_failures(lines, cfg)
    return sorted(failed, key=RULES.index)


# ====================================================================== classifier
ScoreMode = Literal["auto", "regression", "expected", "argmax"]


def fineweb_int_score(score: float, low: float = 0.0, high: float = 5.0) -> int:
    """FineWeb-Edu's ``int_score``: ``int(round(max(low, min(score, high))))`` (Python rounding)."""
    return round(max(low, min(score, high)))


def _label_values(config: Any, num_labels: int) -> torch.Tensor:
    """Numeric value of each label: its ``id2label`` name when all names are numbers, else its index."""
    names = [str((config.id2label or {}).get(i, i)) for i in range(num_labels)]
    try:
        return torch.tensor([float(name) for name in names])
    except ValueError:
        return torch.arange(num_labels, dtype=torch.float32)


@dataclass
class QualityClassifier:
    """A Hugging Face sequence-classification model and its tokenizer, scoring texts in batches.

    ``mode``: ``regression`` takes the single logit as the score (FineWeb-Edu); ``expected`` the
    expected label value under the softmax, ``sum_k p_k * value_k``; ``argmax`` the value of the most
    probable label.  Label values are the ``id2label`` names when all are numbers (e.g. "0".."5"),
    else the label indices.  ``auto`` is ``regression`` for one label, else ``expected``.
    Texts are truncated to ``max_length`` tokens.
    """

    model: Any
    tokenizer: Any
    mode: ScoreMode = "auto"
    max_length: int = 512
    batch_size: int = 32
    label_values: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        num_labels = int(self.model.config.num_labels)
        if self.mode == "auto":
            self.mode = "regression" if num_labels == 1 else "expected"
        if self.mode not in ("regression", "expected", "argmax"):
            raise ValueError(f"mode must be auto, regression, expected or argmax, got {self.mode!r}")
        if self.mode == "regression" and num_labels != 1:
            raise ValueError(f"regression scoring needs a single-logit head, the model has {num_labels}")
        self.label_values = _label_values(self.model.config, num_labels)
        if self.tokenizer.pad_token is None:  # e.g. Llama: pad with EOS for batching
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @classmethod
    def from_pretrained(
        cls,
        path: PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> QualityClassifier:
        """Load ``AutoModelForSequenceClassification`` + ``AutoTokenizer`` from a local dir or hub id."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(path))
        load_kwargs = {"dtype": dtype} if dtype is not None else {}
        model = AutoModelForSequenceClassification.from_pretrained(os.fspath(path), **load_kwargs)
        return cls(model.to(device).eval(), tokenizer, **kwargs)

    @torch.no_grad()
    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Float32 logits [N, num_labels] of texts, in batches of ``batch_size``."""
        device = module_device(self.model)
        out = []
        for batch in batched(texts, self.batch_size):
            enc = self.tokenizer(
                list(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            out.append(self.model(**enc.to(device)).logits.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, int(self.model.config.num_labels))

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text (see the class docstring for the modes)."""
        logits = self.logits(texts)
        if self.mode == "regression":
            return logits[:, 0].tolist()
        if self.mode == "argmax":
            return self.label_values[logits.argmax(dim=-1)].tolist()
        return (logits.softmax(dim=-1) @ self.label_values).tolist()


# ====================================================================== jsonl driver
@dataclass
class _FilterReport:
    read: int = 0
    kept: int = 0
    rejected_heuristics: int = 0
    rejected_classifier: int = 0
    rule_hits: Counter[str] = field(default_factory=Counter)
    scores: list[float] = field(default_factory=list)

    def as_dict(self, threshold: float | None) -> dict[str, Any]:
        report: dict[str, Any] = {
            "read": self.read,
            "kept": self.kept,
            "rejected": {"heuristics": self.rejected_heuristics, "classifier": self.rejected_classifier},
            "rule_hits": {rule: self.rule_hits[rule] for rule in RULES if self.rule_hits[rule]},
        }
        if self.scores:
            report["classifier"] = {
                "scored": len(self.scores),
                "threshold": threshold,
                "mean_score": math.fsum(self.scores) / len(self.scores),
            }
        return report


def run_filter(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    text_field: str = "text",
    heuristics: HeuristicConfig | None = None,
    classifier: QualityClassifier | None = None,
    threshold: float = 4.0,
    round_scores: bool = False,
    score_field: str = "quality_score",
    rejected_output: PathLike | None = None,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Filter JSONL rows: heuristic rules first, then the classifier on the survivors.

    A row is kept when it fails no heuristic rule (``heuristics`` None: no heuristic step) and, with
    a ``classifier``, its score is > ``threshold`` (the score is rounded to FineWeb-Edu's
    ``int_score`` first when ``round_scores``; FineWeb-Edu's own cut ``int_score >= 3`` is
    ``round_scores=True, threshold=2``).  Kept rows are written unchanged to ``output`` (atomically),
    with the score in ``score_field`` when a classifier ran.  ``rejected_output`` receives rejected
    rows with ``rejected_by`` (rule names, or ``["classifier"]``) and any score.

    Returns ``{"read", "kept", "rejected": {"heuristics", "classifier"}, "rule_hits": {rule: docs
    failing it (a doc can fail several)}, "classifier": {"scored", "threshold", "mean_score"}}``.
    """
    report = _FilterReport()
    total = count_records(inputs, text_field)
    steps = "+".join(
        s for s, on in (("heuristics", heuristics), ("classifier", classifier)) if on is not None
    )
    with (
        JsonlWriter(output) as kept_out,
        optional_writer(rejected_output) as rejected_out,
        progress_bar(f"filter: {steps}", total) as bar,
    ):
        for chunk in batched(read_records(inputs, text_field), chunk_size):
            report.read += len(chunk)
            survivors = []
            for rec in chunk:
                failed = heuristic_failures(rec.text, heuristics) if heuristics is not None else []
                report.rule_hits.update(failed)
                if not failed:
                    survivors.append(rec)
                elif rejected_out is not None:
                    rejected_out.write({**rec.row, "rejected_by": failed})
            report.rejected_heuristics += len(chunk) - len(survivors)
            scores: list[float | None] = [None] * len(survivors)
            if classifier is not None and survivors:
                raw = classifier.score([rec.text for rec in survivors])
                report.scores += raw
                scores = [fineweb_int_score(s) if round_scores else s for s in raw]
            for rec, score in zip(survivors, scores, strict=True):
                row = rec.row if score is None else {**rec.row, score_field: score}
                if score is None or score > threshold:
                    kept_out.write(row)
                else:
                    report.rejected_classifier += 1
                    if rejected_out is not None:
                        rejected_out.write({**row, "rejected_by": ["classifier"]})
            bar.update(len(chunk))
        report.kept = kept_out.count
    return report.as_dict(threshold if classifier is not None else None)
