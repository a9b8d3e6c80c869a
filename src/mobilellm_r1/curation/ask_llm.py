"""Ask-LLM data scoring (Sachdeva et al. 2024, "How to Train Data-Efficient LLMs", arXiv 2402.09668).

A language model reads a prompt that wraps a document and asks whether it is useful for training;
the document's score is the probability that the answer's first token is "yes".  The general
prompt is the paper's (its Fig. 3); the code / math / knowledge prompts are ours, in the same shape.
The prompt is rendered with the tokenizer's chat template (user turn, then the opened assistant
turn) when there is one, else as plain text ending in ``Answer:``.

Score (``normalize``):
  * ``yes_no`` (default): P(yes) / (P(yes) + P(no)), the answer restricted to the two options;
  * ``softmax``: P(yes) under the softmax over the whole vocabulary (the paper's raw probability).
P(yes) sums the probabilities of the spellings in ``yes_tokens`` that are single tokens ("yes",
"Yes", " yes", " Yes"), likewise P(no).

Batching: each batch is one forward pass.  Right padding (default) needs no mask: the model is
causal, so the logits at each row's last real token are those of the unpadded prompt; the final
hidden state is gathered there and only those rows go through the LM head.  Left padding (our
:class:`~mobilellm_r1.model.model.Transformer` only) shifts positions per row and masks the pads,
as the generator's prefill does, and reads the last position (``last_only``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from ..data.records import JsonlWriter, PathLike, optional_writer, read_records
from ..deploy.generate import prefill_mask
from ..model.model import Transformer, module_device
from ..model.padding import pad_rows
from .filters import batched

DOC_SLOT = "{document}"
_QUESTION = (
    "Does the previous paragraph demarcated within ### and ### contain informative signal for "
    "pre-training a large-language model{goal}? An informative datapoint should {criteria}\n\n"
    "OPTIONS:\n- yes\n- no"
)
PROMPTS: dict[str, str] = {
    "general": "###\n{document}\n###\n\n"
    + _QUESTION.format(
        goal="",
        criteria="be well-formatted, contain some usable knowledge of the world, and strictly NOT have "
        "any harmful, racist, sexist, etc. content.",
    ),
    "code": "###\n{document}\n###\n\n"
    + _QUESTION.format(
        goal=" to write code",
        criteria="contain correct, readable and well-structured code (with explanations, docstrings or "
        "tests where useful) that teaches programming concepts, algorithms or library usage, and NOT "
        "be auto-generated boilerplate, configuration dumps or broken code.",
    ),
    "math": "###\n{document}\n###\n\n"
    + _QUESTION.format(
        goal=" to reason about mathematics",
        criteria="state mathematical problems, definitions or arguments clearly and work through them "
        "step by step to a correct result, and NOT contain calculation errors, wrong answers or "
        "unexplained jumps.",
    ),
    "knowledge": "###\n{document}\n###\n\n"
    + _QUESTION.format(
        goal=" to learn facts about the world",
        criteria="be coherent, well-written prose stating accurate facts (science, history, geography, "
        "people, ...) in an explanatory way, and NOT be spam, advertising, navigation menus or "
        "incoherent text.",
    ),
}
PLAIN_ANSWER = "\n\nAnswer:"
YES_TOKENS = ("yes", "Yes", " yes", " Yes")
NO_TOKENS = ("no", "No", " no", " No")
_SENTINEL = "\uf8ffASK_LLM_DOCUMENT\uf8ff"  # private-use characters: never in a rendered template


class ChatTokenizer(Protocol):
    """What Ask-LLM needs of a tokenizer (:class:`mobilellm_r1.tokenizer.Tokenizer` has it)."""

    bos_id: int
    pad_id: int

    def encode(
        self, text: str, bos: bool = False, eos: bool = False, allowed_special: Any = ...
    ) -> list[int]: ...

    def token_to_id(self, token: str) -> int: ...


def prompt_for(domain: str) -> str:
    """The prompt template of a domain (``general``, ``code``, ``math``, ``knowledge``)."""
    if domain not in PROMPTS:
        raise ValueError(f"unknown Ask-LLM domain {domain!r}; choose from {sorted(PROMPTS)}")
    return PROMPTS[domain]


def render_prompt(document: str, domain: str = "general") -> str:
    """The user message for a document (the domain's template with the document inserted)."""
    return prompt_for(domain).replace(DOC_SLOT, document)


def _single_token_ids(tokenizer: ChatTokenizer, spellings: Sequence[str]) -> list[int]:
    ids = []
    for spelling in spellings:
        try:
            ids.append(tokenizer.token_to_id(spelling))
        except KeyError:
            continue
    if not ids:
        raise ValueError(f"none of {list(spellings)} is a single token of the tokenizer")
    return sorted(set(ids))


@torch.no_grad()
def next_token_logits(
    model: nn.Module, rows: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"
) -> torch.Tensor:
    """Float32 logits [B, V] of the token following each row, from one forward over the batch.

    ``model``: our :class:`Transformer`, or (right padding only) any causal LM module whose forward
    takes ids [B, T] and returns logits [B, T, V] or an output with ``.logits``.
    """
    device = module_device(model)
    ids = pad_rows(rows, pad_id, padding_side)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids, lengths = ids.to(device), lengths.to(device)
    if padding_side == "left":
        if not isinstance(model, Transformer):
            raise ValueError("left padding needs our Transformer (position ids and mask); use right padding")
        pads = ids.shape[1] - lengths
        positions = (torch.arange(ids.shape[1], device=device)[None, :] - pads[:, None]).clamp(min=0)
        mask = prefill_mask(pads, ids.shape[1]) if bool(pads.any()) else None
        return model(ids, positions, attn_mask=mask, last_only=True)[:, -1].float()
    if padding_side != "right":
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    rows_idx = torch.arange(len(rows), device=device)
    if isinstance(model, Transformer):
        hidden = model(ids, return_hidden=True)[rows_idx, lengths - 1]  # [B, d]
        return model.lm_head(hidden).float()
    out = model(ids)
    logits = getattr(out, "logits", out)
    return logits[rows_idx, lengths - 1].float()


@dataclass
class AskLLMScorer:
    """Scores documents with Ask-LLM (see the module docstring for the prompt and the score).

    Attributes:
        model: our Transformer or a causal LM module (see :func:`next_token_logits`), in eval mode
            (a checkpoint loads with :func:`mobilellm_r1.model.hf.load_checked`, as every command does).
        tokenizer: our Llama-3 tokenizer or anything with the :class:`ChatTokenizer` methods.
        normalize: ``yes_no`` or ``softmax``.
        use_chat_template: render with ``tokenizer.apply_chat_template``; None: when the tokenizer
            has a chat template.
        max_doc_tokens: documents are cut to their first ``max_doc_tokens`` tokens.
        batch_size: prompts per forward pass (prompts are sorted by length to pad little).
        padding_side: ``right`` or ``left`` (same scores; left needs our Transformer).
    """

    model: nn.Module
    tokenizer: Any
    normalize: Literal["yes_no", "softmax"] = "yes_no"
    use_chat_template: bool | None = None
    max_doc_tokens: int = 1024
    batch_size: int = 8
    padding_side: Literal["right", "left"] = "right"
    yes_tokens: Sequence[str] = YES_TOKENS
    no_tokens: Sequence[str] = NO_TOKENS
    _parts: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.normalize not in ("yes_no", "softmax"):
            raise ValueError(f"normalize must be 'yes_no' or 'softmax', got {self.normalize!r}")
        if self.use_chat_template is None:
            self.use_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.yes_ids = _single_token_ids(self.tokenizer, self.yes_tokens)
        self.no_ids = _single_token_ids(self.tokenizer, self.no_tokens)

    def _prompt_parts(self, domain: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the document for a domain (cached)."""
        if domain not in self._parts:
            user = render_prompt(_SENTINEL, domain)
            if self.use_chat_template:
                messages = [{"role": "user", "content": user}]
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                before, after = text.split(_SENTINEL)
                self._parts[domain] = (
                    self.tokenizer.encode(before, allowed_special="all"),
                    self.tokenizer.encode(after, allowed_special="all"),
                )
            else:
                before, after = (user + PLAIN_ANSWER).split(_SENTINEL)
                self._parts[domain] = (self.tokenizer.encode(before, bos=True), self.tokenizer.encode(after))
        return self._parts[domain]

    def prompt_ids(self, document: str, domain: str = "general") -> list[int]:
        """Token ids of the full prompt; the document is encoded as ordinary text and truncated."""
        before, after = self._prompt_parts(domain)
        return before + self.tokenizer.encode(document)[: self.max_doc_tokens] + after

    def _scores_from_logits(self, logits: torch.Tensor) -> list[float]:
        probs = logits.softmax(dim=-1)
        p_yes = probs[:, self.yes_ids].sum(dim=-1)
        if self.normalize == "softmax":
            return p_yes.tolist()
        p_no = probs[:, self.no_ids].sum(dim=-1)
        return (p_yes / (p_yes + p_no).clamp(min=torch.finfo(probs.dtype).tiny)).tolist()

    def score_ids(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """Scores of already tokenized prompts, in order."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        scores = [0.0] * len(prompts)
        for chunk in batched(order, self.batch_size):
            logits = next_token_logits(
                self.model, [prompts[i] for i in chunk], self.tokenizer.pad_id, self.padding_side
            )
            for i, s in zip(chunk, self._scores_from_logits(logits), strict=True):
                scores[i] = s
        return scores

    def score(self, documents: Sequence[str], domains: str | Sequence[str] = "general") -> list[float]:
        """Ask-LLM score of each document; ``domains``: one domain for all, or one per document."""
        if isinstance(domains, str):
            domains = [domains] * len(documents)
        if len(domains) != len(documents):
            raise ValueError(f"{len(domains)} domains for {len(documents)} documents")
        return self.score_ids([self.prompt_ids(d, dom) for d, dom in zip(documents, domains, strict=True)])


def top_fraction_count(n: int, fraction: float) -> int:
    """How many of ``n`` items the top ``fraction`` keeps: ceil(fraction * n) (float noise ignored)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return min(n, math.ceil(round(fraction * n, 9)))


def select_top(scores: Sequence[float], fraction: float) -> list[int]:
    """Indices (ascending) of the top ``fraction`` of scores; ties go to the earlier index."""
    k = top_fraction_count(len(scores), fraction)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:k])


def _domain_of(row: dict[str, Any], domain: str, domain_field: str | None) -> str:
    if domain_field is None:
        return domain
    value = row.get(domain_field)
    return value if isinstance(value, str) and value in PROMPTS else domain


def run_ask_llm(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    scorer: AskLLMScorer,
    *,
    text_field: str = "text",
    top_fraction: float = 0.1,
    domain: str = "general",
    domain_field: str | None = None,
    score_field: str = "ask_llm_score",
    rejected_output: PathLike | None = None,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Score JSONL rows with Ask-LLM and keep the top ``top_fraction`` of them (input order).

    Each row is scored with the ``domain`` prompt, or with the prompt named by its ``domain_field``
    value when that is a known domain.  Two passes over the inputs: scoring, then writing the kept
    rows (with the score in ``score_field``) to ``output`` atomically.  Returns ``{"read", "kept",
    "top_fraction", "min_kept_score", "mean_score", "domains": {domain: rows}}``.
    """
    scores: list[float] = []
    domains: dict[str, int] = {}
    for chunk in batched(read_records(inputs, text_field), chunk_size):
        doms = [_domain_of(rec.row, domain, domain_field) for rec in chunk]
        for d in doms:
            domains[d] = domains.get(d, 0) + 1
        scores += scorer.score([rec.text for rec in chunk], doms)
    keep = set(select_top(scores, top_fraction))
    with JsonlWriter(output) as kept_out, optional_writer(rejected_output) as rejected_out:
        for i, rec in enumerate(read_records(inputs, text_field)):
            if i >= len(scores):
                raise RuntimeError(f"{rec.location}: the input grew between the scoring and writing passes")
            row = {**rec.row, score_field: scores[i]}
            if i in keep:
                kept_out.write(row)
            elif rejected_out is not None:
                rejected_out.write(row)
    return {
        "read": len(scores),
        "kept": len(keep),
        "top_fraction": top_fraction,
        "min_kept_score": min((scores[i] for i in keep), default=None),
        "mean_score": math.fsum(scores) / len(scores) if scores else None,
        "domains": domains,
    }
