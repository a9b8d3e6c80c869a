"""Quality filters: heuristic rules (per rule and on the synthetic corpus), classifier scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobilellm_r1.curation.filters import (
    RULES,
    HeuristicConfig,
    QualityClassifier,
    fineweb_int_score,
    heuristic_failures,
    run_filter,
)
from mobilellm_r1.data.synth import SynthConfig, generate

PROSE = (
    "The history of the river valley is closely tied to the farms that grew along its banks. "
    "Early settlers cleared the land and built small mills to grind the grain that they harvested "
    "each autumn. Over time the villages grew into market towns, and the roads that connected them "
    "became busy with traders who brought cloth, salt and tools. Today the valley is known for its "
    "orchards and for the old stone bridges that still carry traffic across the water."
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ heuristic rules
BAD_TEXTS = {
    "word_count": "Too short to keep, with the words of it.",
    "mean_word_length": "a b c d e f g h i j the of and to " * 8,
    "symbol_ratio": PROSE + " #tag #tag #tag #tag #tag #tag #tag #tag #tag #tag",
    "alpha_words": PROSE + " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23",
    "stop_words": " ".join(f"word{i} alpha beta gamma delta." for i in range(15)),
    "bullet_lines": "\n".join(f"- {s}." for s in PROSE.split(". ")),
    "ellipsis_lines": "\n".join(f"{s} ..." for s in PROSE.split(". ")),
    "dup_lines": "\n".join([PROSE, "Read more.", "Read more.", "Read more.", "Read more."]),
    "dup_line_chars": "\n".join([PROSE, PROSE[:150] + ".", PROSE[:150] + "."]),
    "top_ngram": PROSE + " the river the river the river the river the river the river the river the river",
    "dup_ngram": PROSE + " " + PROSE[:200],
    "line_punct": "\n".join(f"{s} here" for s in PROSE.split(". ")),
    "policy_lines": "\n".join([PROSE, "We use cookies.", "Privacy Policy.", "Enable JavaScript."]),
}


def test_good_prose_passes_all_gopher_rules() -> None:
    assert heuristic_failures(PROSE) == []


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_catches_its_text(rule: str) -> None:
    assert rule in heuristic_failures(BAD_TEXTS[rule])


def test_rules_can_be_switched_off() -> None:
    off = HeuristicConfig(**{f: None for f in HeuristicConfig.__dataclass_fields__})
    assert all(heuristic_failures(text, off) == [] for text in BAD_TEXTS.values())
    assert heuristic_failures("", off) == []
    assert heuristic_failures("") == ["word_count", "mean_word_length"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(seed=0), out)
    return out / "pretrain"


def rejection_rates(files: list[Path], cfg: HeuristicConfig, out: Path) -> dict[str, float]:
    rates = {}
    for f in files:
        report = run_filter(f, out / f.name, heuristics=cfg)
        rates[f.stem] = 1 - report["kept"] / report["read"]
        assert sum(report["rejected"].values()) == report["read"] - report["kept"]
    return rates


def test_synthetic_noise_rejected_clean_kept(synth, tmp_path) -> None:
    """Measured on the synthetic corpus: noise_* kinds rejected vs high-quality docs wrongly rejected."""
    clean = [synth / f"{d}.jsonl" for d in ("math", "code", "knowledge")]
    noise = sorted(synth.glob("noise_*.jsonl"))
    mixed = rejection_rates(clean + noise, HeuristicConfig.mixed(), tmp_path)
    gopher = rejection_rates(clean + noise, HeuristicConfig(), tmp_path)
    for name in mixed:
        print(f"{name:18s} rejected: mixed {mixed[name]:6.1%}  gopher defaults {gopher[name]:6.1%}")
    assert mixed["noise_gibberish"] == 1.0
    assert mixed["noise_spam"] > 0.5 and mixed["noise_boilerplate"] > 0.5
    assert max(mixed[d] for d in ("math", "code", "knowledge")) < 0.08
    assert min(gopher[f.stem] for f in noise) > 0.9  # web-page defaults reject all noise ...
    assert min(gopher[d] for d in ("math", "code", "knowledge")) > 0.5  # ... and most short code / math


def test_run_filter_report_and_rejected_output(tmp_path) -> None:
    rows = [{"text": PROSE, "id": 0}, {"text": BAD_TEXTS["stop_words"], "id": 1}, {"text": "short", "id": 2}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    report = run_filter(
        src, tmp_path / "kept.jsonl", heuristics=HeuristicConfig(), rejected_output=tmp_path / "rej.jsonl"
    )
    assert report["read"] == 3 and report["kept"] == 1 and report["rejected"]["heuristics"] == 2
    assert report["rule_hits"]["stop_words"] == 2 and report["rule_hits"]["word_count"] == 1
    assert read_jsonl(tmp_path / "kept.jsonl") == rows[:1]
    rejected = read_jsonl(tmp_path / "rej.jsonl")
    assert [r["id"] for r in rejected] == [1, 2] and "stop_words" in rejected[1]["rejected_by"]


# ------------------------------------------------------------------ classifier
SENTENCES = [
    "the cat sat on the mat",
    "a theorem about prime numbers and their proof",
    "buy now cheap pills click here",
    "def add ( a , b ) : return a + b",
    "the river flows through the old town",
    "numbers add up to a total",
]


def save_tokenizer(directory: Path, with_pad: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[EOS]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    pad = {"pad_token": "[PAD]"} if with_pad else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", **pad)
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("bert")
    fast = save_tokenizer(directory)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).eval().save_pretrained(directory)
    return directory


DOCS = [s * k for k in (1, 2, 5) for s in SENTENCES]  # lengths 6..60+ words; the longest get truncated


def direct_logits(clf: QualityClassifier, text: str) -> torch.Tensor:
    enc = clf.tokenizer([text], truncation=True, max_length=clf.max_length, return_tensors="pt")
    with torch.no_grad():
        return clf.model(**enc).logits[0].float()


def test_classifier_scores_equal_direct_model_outputs(bert_dir) -> None:
    clf = QualityClassifier.from_pretrained(bert_dir, max_length=24, batch_size=5)
    assert clf.mode == "regression"
    scores = clf.score(DOCS)
    direct = [direct_logits(clf, t)[0].item() for t in DOCS]
    assert scores == pytest.approx(direct, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) > len(DOCS) // 2  # the scores differ across docs


def test_classifier_threshold_keeps_exactly_the_docs_above_it(bert_dir, tmp_path) -> None:
    clf = QualityClassifier.from_pretrained(bert_dir, max_length=24, batch_size=4)
    scores = clf.score(DOCS)
    threshold = sorted(scores)[len(scores) // 2]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in enumerate(DOCS)])
    report = run_filter(src, tmp_path / "kept.jsonl", classifier=clf, threshold=threshold, chunk_size=7)
    kept = read_jsonl(tmp_path / "kept.jsonl")
    assert [r["id"] for r in kept] == [i for i, s in enumerate(scores) if s > threshold]
    assert [r["quality_score"] for r in kept] == pytest.approx([s for s in scores if s > threshold], abs=1e-5)
    assert report["kept"] == len(kept) and report["rejected"]["classifier"] == len(DOCS) - len(kept)
    assert report["classifier"]["scored"] == len(DOCS)


def test_int_score_rounding(bert_dir, tmp_path) -> None:
    assert [fineweb_int_score(s) for s in (-1.2, 0.49, 2.5, 3.5, 4.51, 7.0)] == [0, 0, 2, 4, 5, 5]
    clf = QualityClassifier.from_pretrained(bert_dir, max_length=24)
    clf.model.classifier.bias.data += 3.0 - torch.tensor(clf.score(DOCS)).mean()  # centre scores near 3
    scores = clf.score(DOCS)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in DOCS])
    run_filter(src, tmp_path / "kept.jsonl", classifier=clf, threshold=2, round_scores=True)
    kept = read_jsonl(tmp_path / "kept.jsonl")
    assert [r["quality_score"] for r in kept] == [
        fineweb_int_score(s) for s in scores if fineweb_int_score(s) > 2
    ]


def test_multiclass_expected_and_argmax_without_pad_token(tmp_path) -> None:
    """A Llama classifier whose tokenizer has no pad token: padded with EOS, pooled at the last token."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    fast = save_tokenizer(tmp_path, with_pad=False)
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        num_labels=3,
        id2label={0: "1", 1: "2", 2: "3"},
        label2id={"1": 0, "2": 1, "3": 2},
    )
    LlamaForSequenceClassification(cfg).eval().save_pretrained(tmp_path)
    expected = QualityClassifier.from_pretrained(tmp_path, batch_size=4)
    assert expected.mode == "expected" and expected.tokenizer.pad_token == "[EOS]"
    probs = torch.stack([direct_logits(expected, t) for t in DOCS]).softmax(-1)
    assert expected.score(DOCS) == pytest.approx((probs @ torch.tensor([1.0, 2, 3])).tolist(), abs=1e-5)
    argmax = QualityClassifier(expected.model, expected.tokenizer, mode="argmax", batch_size=3)
    assert argmax.score(DOCS) == (probs.argmax(-1) + 1).float().tolist()
    expected.model.config.id2label = {0: "low", 1: "mid", 2: "high"}  # not numbers: label indices
    indexed = QualityClassifier(expected.model, expected.tokenizer)
    assert indexed.score(DOCS) == pytest.approx((probs @ torch.tensor([0.0, 1, 2])).tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="single-logit"):
        QualityClassifier(expected.model, expected.tokenizer, mode="regression")
