"""Tests for `data train-tokenizer` (`mobilellm_r1.data.tokenizer_train`) and `init --tokenizer`:
a BPE vocabulary learned on the small synthetic corpus, in the Llama-3 layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from mobilellm_r1.cli import main
from mobilellm_r1.data.recipes import load_mixture, prepare
from mobilellm_r1.data.synth import SynthConfig, generate
from mobilellm_r1.data.tokenizer_train import MIN_VOCAB, chat_texts, train_bpe
from mobilellm_r1.model.hf import load_pretrained
from mobilellm_r1.tokenizer import LLAMA3_PAT_STR, SINGLE_DIGIT_PAT_STR, load_tokenizer

SMALL = SynthConfig(
    seed=3, math_docs=60, code_docs=30, knowledge_docs=40, noise_docs=20, sft_general=20, sft_reasoning=20,
    probe_per_domain=4, eval_math=8, eval_code=4, eval_knowledge=8, n_entities=30,
)  # fmt: skip
VOCAB = 1024
SAMPLES = [
    "Noah has 17 apples. Chloe has 3 more apples than Noah. How many apples does Chloe have?",
    "def add(a, b):\n    return a + b  # 12345 \u00e9\u00e8 \u4e2d\u6587 \U0001f600\n\n\n",
    "  leading spaces, tabs\tand a \\boxed{42} answer.",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus dir, tokenizer dir) made through the CLI."""
    root = tmp_path_factory.mktemp("bpe")
    generate(SMALL, root / "synth")
    out = root / "tok"
    argv = ["data", "train-tokenizer", "--files", str(root / "synth" / "pretrain")]
    argv += [
        "--chats",
        str(root / "synth" / "sft" / "*.jsonl"),
        "--vocab-size",
        str(VOCAB),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return root / "synth", out


def test_layout_is_llama3(trained: tuple[Path, Path]) -> None:
    tok = load_tokenizer(trained[1])
    assert tok.vocab_size == VOCAB
    assert tok.pat_str == LLAMA3_PAT_STR
    learned = VOCAB - 256
    assert tok.bos_id == learned and tok.eos_id == learned + 1
    assert sorted(tok.special_tokens.values()) == list(range(learned, VOCAB))
    assert tok.stop_ids == (learned + 1, tok.eom_id, tok.eot_id)


def test_round_trip_and_compression(trained: tuple[Path, Path]) -> None:
    tok = load_tokenizer(trained[1])
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    corpus_line = json.loads((trained[0] / "pretrain" / "math.jsonl").read_text().splitlines()[0])["text"]
    ids = tok.encode(corpus_line)
    assert len(ids) < len(corpus_line.encode()) / 2.5  # merges learned on this corpus compress it


def test_transformers_reads_the_same_ids(trained: tuple[Path, Path]) -> None:
    ours = load_tokenizer(trained[1])
    theirs = AutoTokenizer.from_pretrained(trained[1])
    for text in SAMPLES:
        assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    chat = [{"role": "user", "content": SAMPLES[0]}]
    assert ours.apply_chat_template(chat, add_generation_prompt=True) == theirs.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=False
    )


def test_single_digits_spell_numbers(tmp_path: Path) -> None:
    """--single-digits: no learned id holds two digits, however often a number repeats, and the
    split regex survives a save and load (and transformers reads the same ids)."""
    texts = ["17 + 3 = 20 and 105 apples, 2024 twice: 2024 2024 1234567"] * 50 + SAMPLES
    out = tmp_path / "digits"
    argv = ["data", "train-tokenizer", "--files", str(tmp_path / "t.jsonl"), "--vocab-size", "700"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main([*argv, "--single-digits", "--out", str(out)]) == 0
    tok = load_tokenizer(out)
    assert tok.pat_str == SINGLE_DIGIT_PAT_STR
    pieces = [tok.decode([i]) for i in tok.encode("year 2024: 105 + 17")]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == [*"2024105", "1", "7"]
    learned = [tok.decode([i]) for i in range(tok.vocab_size - 256)]
    assert not any(sum(c.isdigit() for c in piece) > 1 for piece in learned)
    theirs = AutoTokenizer.from_pretrained(out)
    for text in SAMPLES:
        assert theirs.encode(text, add_special_tokens=False) == tok.encode(text)
    default = train_bpe(texts, 700)
    assert [default.decode([i]) for i in default.encode("105")] == ["105"]  # Llama 3's regex: merged


def test_training_is_deterministic(trained: tuple[Path, Path]) -> None:
    texts = list(chat_texts([str(trained[0] / "sft" / "*.jsonl")]))
    first, second = train_bpe(texts, 700), train_bpe(texts, 700)
    assert first.fingerprint() == second.fingerprint()
    assert first.fingerprint() != load_tokenizer(trained[1]).fingerprint()


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=f">= {MIN_VOCAB}"):
        train_bpe(["some text"], 300)
    rows = tmp_path / "chats.jsonl"
    rows.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n" + json.dumps({"text": "x"})
    )
    with pytest.raises(ValueError, match=r"chats.jsonl:2: a chat row needs a 'messages' list"):
        list(chat_texts([str(rows)]))
    assert main(["data", "train-tokenizer", "--vocab-size", "1024", "--out", str(tmp_path / "t")]) == 1
    assert "give --recipe, --files or --chats" in capsys.readouterr().err


def test_init_takes_the_vocabulary(trained: tuple[Path, Path], tmp_path: Path) -> None:
    tok = load_tokenizer(trained[1])
    out = tmp_path / "init"
    assert main(["init", "--preset", "tiny", "--tokenizer", str(trained[1]), "--out", str(out)]) == 0
    model, saved = load_pretrained(out)
    cfg: Any = model.config
    assert cfg.vocab_size == VOCAB and model.embed_tokens.weight.shape[0] == VOCAB
    assert cfg.bos_token_id == tok.bos_id and set(cfg.eos_token_id) == set(tok.stop_ids)
    assert saved.fingerprint() == tok.fingerprint()


def test_shards_of_another_tokenizer_are_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(
        f"name: mix\nseq_len: 64\nshards_root: {tmp_path / 'shards'}\ndata_root: {trained[0]}\n"
        "sources:\n  - {name: math, weight: 1, files: [pretrain/math.jsonl]}\n"
    )
    assert (
        main(["data", "tokenize", "--recipe", str(recipe), "--tokenizer", str(trained[1]), "--workers", "1"])
        == 0
    )
    mixture = load_mixture(str(recipe))
    prepare(mixture, load_tokenizer(trained[1]))  # the same tokenizer: accepted
    with pytest.raises(ValueError, match=r"source 'math' was tokenized with .*re-tokenize"):
        prepare(mixture, load_tokenizer())
