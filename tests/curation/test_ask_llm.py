"""Ask-LLM: prompts per domain, batched scores equal unbatched ones (both paddings), top-p% selection."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from helpers import small_config
from mobilellm_r1.curation.ask_llm import (
    PLAIN_ANSWER,
    PROMPTS,
    AskLLMScorer,
    prompt_for,
    render_prompt,
    run_ask_llm,
    select_top,
    top_fraction_count,
)
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import load_tokenizer

DOCS = [
    "x",
    "The mitochondria is the powerhouse of the cell. " * 6,
    "def add(a, b):\n    return a + b\n",
    "Solve 2x + 3 = 7. Subtract 3: 2x = 4, so x = 2.",
    "BUY NOW!!! cheap pills",
    "Paris is the capital of France.",
    "word " * 150,  # longer than max_doc_tokens: truncated
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer) -> nn.Module:
    cfg = small_config(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id, eos_token_id=[])
    return build_model(cfg, seed=3).eval()


def scorer(model, tokenizer, **kwargs) -> AskLLMScorer:
    return AskLLMScorer(model, tokenizer, max_doc_tokens=64, **kwargs)


@torch.no_grad()
def reference_score(s: AskLLMScorer, doc: str, domain: str = "general") -> float:
    """Unpadded full forward over one prompt, softmax at its last position."""
    probs = s.model(torch.tensor([s.prompt_ids(doc, domain)]))[0, -1].float().softmax(-1)
    yes, no = probs[s.yes_ids].sum(), probs[s.no_ids].sum()
    return float(yes / (yes + no)) if s.normalize == "yes_no" else float(yes)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("normalize", ["yes_no", "softmax"])
def test_batched_scores_equal_unbatched(model, tokenizer, padding_side, normalize) -> None:
    batched = scorer(model, tokenizer, batch_size=4, padding_side=padding_side, normalize=normalize)
    single = scorer(model, tokenizer, batch_size=1, normalize=normalize)
    scores = batched.score(DOCS)
    assert len({len(batched.prompt_ids(d)) for d in DOCS}) == len(DOCS)  # all lengths differ
    assert scores == pytest.approx(single.score(DOCS), rel=1e-4, abs=1e-9)
    assert scores == pytest.approx([reference_score(single, d) for d in DOCS], rel=1e-4, abs=1e-9)
    assert all(0.0 <= s <= 1.0 for s in scores)
    if normalize == "softmax":
        assert max(scores) < 0.05  # raw probabilities of a random model over a 128k vocabulary


def test_generic_module_gives_the_same_scores(model, tokenizer) -> None:
    """Any causal module returning logits (a wrapper hiding our Transformer) works with right padding."""

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.inner(ids)

    ours = scorer(model, tokenizer, batch_size=3).score(DOCS)
    assert scorer(Wrapped(model), tokenizer, batch_size=3).score(DOCS) == pytest.approx(ours, rel=1e-4)
    with pytest.raises(ValueError, match="left padding"):
        scorer(Wrapped(model), tokenizer, padding_side="left").score(DOCS[:2])


def test_prompt_layout_chat_and_plain(tokenizer, model) -> None:
    chat = scorer(model, tokenizer)
    ids = chat.prompt_ids("DOCUMENT BODY", "math")
    text = tokenizer.decode(ids)
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n###\nDOCUMENT BODY\n###"
    )
    assert text.endswith("- no<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "to reason about mathematics" in text
    plain = scorer(model, tokenizer, use_chat_template=False)
    ids = plain.prompt_ids("DOCUMENT BODY")
    assert (
        ids[0] == tokenizer.bos_id
        and tokenizer.decode(ids[1:]) == render_prompt("DOCUMENT BODY") + PLAIN_ANSWER
    )
    # special-token text inside a document stays ordinary text; long documents are cut
    assert tokenizer.eot_id not in plain.prompt_ids("<|eot_id|>")
    assert len(plain.prompt_ids("word " * 500)) == len(plain.prompt_ids("")) + 64


def test_domain_prompts(tokenizer, model) -> None:
    assert set(PROMPTS) == {"general", "code", "math", "knowledge"}
    assert all(p.count("{document}") == 1 for p in PROMPTS.values())
    assert "write code" in render_prompt("d", "code") and "facts about the world" in render_prompt(
        "d", "knowledge"
    )
    with pytest.raises(ValueError, match="unknown Ask-LLM domain 'poetry'"):
        prompt_for("poetry")
    s = scorer(model, tokenizer, batch_size=4)
    by_domain = {d: s.score(DOCS[:3], d) for d in PROMPTS}
    assert len({tuple(round(x, 7) for x in v) for v in by_domain.values()}) == 4  # the prompt matters
    mixed = s.score(DOCS[:3], ["code", "math", "knowledge"])
    assert mixed == pytest.approx(
        [by_domain["code"][0], by_domain["math"][1], by_domain["knowledge"][2]], rel=1e-4
    )


def test_yes_no_token_spellings(tokenizer, model) -> None:
    s = scorer(model, tokenizer)
    assert s.yes_ids == sorted({tokenizer.token_to_id(t) for t in ("yes", "Yes", " yes", " Yes")})
    with pytest.raises(ValueError, match="single token"):
        scorer(model, tokenizer, yes_tokens=("yesyesyes-not-a-token",))


def test_top_fraction_count_and_ties() -> None:
    assert [top_fraction_count(10, f) for f in (0.0, 0.1, 0.25, 0.3, 0.7, 1.0)] == [0, 1, 3, 3, 7, 10]
    assert top_fraction_count(0, 0.5) == 0
    assert select_top([0.1, 0.9, 0.5, 0.9, 0.2], 0.4) == [1, 3]
    assert select_top([0.5, 0.5, 0.5], 0.34) == [0, 1]  # ties: earlier first
    with pytest.raises(ValueError):
        top_fraction_count(5, 1.5)


def test_run_ask_llm_keeps_top_fraction(tmp_path, tokenizer, model) -> None:
    domains = ["math", "knowledge", "code", "math", None, "knowledge", "poetry"]
    rows = [{"text": t, "id": i, "domain": d} for i, (t, d) in enumerate(zip(DOCS, domains, strict=True))]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = scorer(model, tokenizer, batch_size=2)
    report = run_ask_llm(
        src,
        tmp_path / "out.jsonl",
        s,
        top_fraction=0.4,
        domain_field="domain",
        rejected_output=tmp_path / "rest.jsonl",
        chunk_size=3,
    )
    used = [d if d in PROMPTS else "general" for d in domains]
    expected = s.score(DOCS, used)
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    k = math.ceil(0.4 * len(DOCS))
    top = sorted(sorted(range(len(DOCS)), key=lambda i: -expected[i])[:k])
    assert report["kept"] == len(kept) == k and [r["id"] for r in kept] == top
    assert [r["ask_llm_score"] for r in kept] == pytest.approx([expected[i] for i in top], rel=1e-4)
    assert report["domains"] == {"math": 2, "knowledge": 2, "code": 1, "general": 2}
    assert len((tmp_path / "rest.jsonl").read_text().splitlines()) == len(DOCS) - k
