"""Tests for mobilellm_r1.tokenizer (CPU, no network)."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
from pathlib import Path

import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from mobilellm_r1.tokenizer import (
    CHAT_TEMPLATE,
    LLAMA3_PAT_STR,
    SYSTEM_PROMPTS,
    Tokenizer,
    chat_messages,
    load_tokenizer,
)

TEXTS = [
    # English prose
    "The quick brown fox jumps over the lazy dog. It's 3:45pm — isn't it? I'LL say WE'VE done it.",
    # Python code
    'def fib(n: int) -> int:\n    """Fibonacci."""\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\n',
    "x = {'a': [1, 2, 3]}  # comment\nprint(f\"{x['a'][0]:>10}\")\r\n",
    # LaTeX math
    r"\frac{a}{b} + \sqrt{x^2} = \int_0^\infty e^{-x}\,dx \quad \Rightarrow \boxed{42}",
    r"$$\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$$ and \(\alpha_i \leq \beta^{2}\)",
    # emoji, including ZWJ sequences, skin tones, flags and variation selectors
    "👍🏽 family: 👨‍👩‍👧‍👦 rainbow flag: 🏳️‍🌈 🇺🇸 ❤️ 🧑🏿‍💻",
    # non-Latin scripts
    "我们今天学习数学：二加二等于四。",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела?",
    "こんにちは、世界。カタカナとひらがな。",
    # numbers and special-token strings as plain text
    "1234567890 3.14159 1e-10 0x1F",
    "<|eot_id|> hello <|begin_of_text|><|start_header_id|>",
    # whitespace edge cases
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\t\t x",
    "trailing   ",
    "   leading",
    "a \n b \r\n c",
    "\u00a0nbsp\u3000ideographic\u2009thin",
    "x" + " " * 100 + "y",
    "\n" * 50 + "end",
]

ROLE_SPECIALS = {"<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eot_id|>": 128009}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    """tiktoken Encoding built straight from the llama-models file and pattern."""
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    path = importlib.resources.files("llama_models.llama3") / "tokenizer.model"
    ranks = load_tiktoken_bpe(str(path))
    return tiktoken.Encoding(
        "reference", pat_str=MetaTokenizer.pat_str, mergeable_ranks=ranks, special_tokens={}
    )


@pytest.fixture(scope="module")
def saved_dir(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tok.save(tmp_path_factory.mktemp("tok"), model_max_length=4096)


@pytest.fixture(scope="module")
def hf_tok(saved_dir: Path):
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        from transformers import AutoTokenizer

        yield AutoTokenizer.from_pretrained(str(saved_dir))


def test_pat_str_matches_llama_models() -> None:
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    assert MetaTokenizer.pat_str == LLAMA3_PAT_STR


def test_encode_matches_reference(tok: Tokenizer, reference: tiktoken.Encoding) -> None:
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == reference.encode_ordinary(text), text
        assert tok.decode(ids) == text


def test_bos_eos_and_allowed_special(tok: Tokenizer) -> None:
    assert tok.encode("hi", bos=True, eos=True) == [128000, *tok.encode("hi"), 128001]
    text = "a<|eot_id|>b"
    assert 128009 not in tok.encode(text)
    assert 128009 in tok.encode(text, allowed_special="all")
    assert 128009 in tok.encode(text, allowed_special={"<|eot_id|>"})
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    assert tok.decode([128000, *tok.encode("hi"), 128009], skip_special_tokens=True) == "hi"


def test_special_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size == len(tok) == 128256
    assert (tok.bos_id, tok.eos_id, tok.eot_id, tok.eom_id, tok.pad_id) == (
        128000,
        128001,
        128009,
        128008,
        128004,
    )
    assert tok.stop_ids == (128001, 128008, 128009)
    expected = {
        "<|begin_of_text|>": 128000,
        "<|end_of_text|>": 128001,
        "<|reserved_special_token_0|>": 128002,
        "<|reserved_special_token_1|>": 128003,
        "<|finetune_right_pad_id|>": 128004,
        "<|step_id|>": 128005,
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008,
        "<|eot_id|>": 128009,
        "<|python_tag|>": 128010,
        "<|reserved_special_token_2|>": 128011,
        "<|reserved_special_token_246|>": 128255,
    }
    specials = tok.special_tokens
    assert len(specials) == 256
    assert sorted(specials.values()) == list(range(128000, 128256))
    for name, idx in expected.items():
        assert specials[name] == idx
        assert tok.token_to_id(name) == idx
        assert tok.id_to_token(idx) == name


def test_token_lookup(tok: Tokenizer) -> None:
    the = tok.token_to_id(" the")
    assert tok.encode(" the") == [the]
    assert tok.id_to_token(the) == " the"
    with pytest.raises(KeyError):
        tok.token_to_id(" the quick brown fox")


def test_long_whitespace_does_not_crash(tok: Tokenizer, reference: tiktoken.Encoding) -> None:
    short = "a" + " " * 20_000 + "b"
    assert tok.encode(short) == reference.encode_ordinary(short)
    huge = "x" + " " * 1_000_000 + "y"  # crashes tiktoken's regex engine without splitting
    ids = tok.encode(huge)
    assert tok.decode(ids) == huge
    assert tok.encode_batch([huge, "ok"]) == [ids, tok.encode("ok")]


def test_encode_batch(tok: Tokenizer) -> None:
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    with_marks = tok.encode_batch(TEXTS[:3], bos=True, eos=True, num_threads=2)
    assert with_marks == [tok.encode(t, bos=True, eos=True) for t in TEXTS[:3]]


def test_system_prompts_and_chat_messages() -> None:
    assert SYSTEM_PROMPTS["math"] == "Please reason step by step, and put your final answer within \\boxed{}."
    assert "\\boxed{}" in SYSTEM_PROMPTS["math"] and "\\\\" not in SYSTEM_PROMPTS["math"]
    assert SYSTEM_PROMPTS["python"] == (
        "\nYou are a helpful and harmless assistant. You should think step-by-step before responding to the "
        "instruction below.\n\nPlease use python programming language only.\nYou must use ```python for just "
        "the final solution code block with the following format:\n```python\n# Your code here\n```\n"
    )
    assert SYSTEM_PROMPTS["cpp"] == (
        "\nYou are a helpful and harmless assistant. You should think step-by-step before responding to the "
        "instruction below.\n\nPlease use c++ programming language only.\nYou must use ```cpp for just "
        "the final solution code block with the following format:\n```cpp\n# Your code here\n```\n"
    )
    assert chat_messages("hi") == [{"role": "user", "content": "hi"}]
    assert chat_messages("hi", "math")[0] == {"role": "system", "content": SYSTEM_PROMPTS["math"]}
    assert chat_messages("hi", "Be brief.")[0]["content"] == "Be brief."


def test_chat_template_render_and_ids(tok: Tokenizer) -> None:
    messages = chat_messages("What is 2+2?", system="Be brief. ")
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief. <|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    no_prompt = tok.apply_chat_template(messages, tokenize=False)
    assert text == no_prompt + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    enc = tok.encode
    expected = [128000]
    for role, content in [("system", "Be brief. "), ("user", "What is 2+2?")]:
        expected += [128006, *enc(role), 128007, *enc("\n\n" + content), 128009]
    expected += [128006, *enc("assistant"), 128007, *enc("\n\n")]
    assert ids == expected
    assert [i for i in ids if i in ROLE_SPECIALS.values()] == [128006, 128007, 128009] * 2 + [128006, 128007]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], r"message 1 .*'role'"),
        ([{"role": "user"}], r"message 0 .*'content'"),
        ([{"content": "hi"}], r"message 0 .*'role'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": 3}], r"message 1 .*'content'"),
        (["hello"], r"message 0 must be a dict"),
    ],
)
def test_chat_validation(tok: Tokenizer, messages: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tok.apply_chat_template(messages)


def test_saved_files(saved_dir: Path) -> None:
    names = sorted(p.name for p in saved_dir.iterdir())
    assert names == [
        "chat_template.jinja",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((saved_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        None,
    )
    assert config["model_max_length"] == 4096
    assert len(config["added_tokens_decoder"]) == 256
    assert config["added_tokens_decoder"]["128009"]["content"] == "<|eot_id|>"
    assert all(t["special"] for t in config["added_tokens_decoder"].values())
    assert (saved_dir / "chat_template.jinja").read_text() == CHAT_TEMPLATE


def test_transformers_matches(tok: Tokenizer, hf_tok) -> None:
    for text in TEXTS:
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text, allowed_special="all"), text
    assert hf_tok.encode("hi") == [128000, *tok.encode("hi")]
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id) == (128000, 128001)
    for messages in [chat_messages("Solve x^2 = 4.", "math"), chat_messages("Sort a list.", "python")]:
        for gen in (True, False):
            ours = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            assert hf_tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False) == ours
            assert hf_tok.encode(ours, add_special_tokens=False) == tok.encode(ours, allowed_special="all")


def test_load_from_tokenizer_json(tok: Tokenizer, saved_dir: Path) -> None:
    loaded = load_tokenizer(saved_dir)
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.pat_str == LLAMA3_PAT_STR
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded.name_or_path == str(saved_dir)
    assert loaded.encode_batch(TEXTS) == tok.encode_batch(TEXTS)


def test_load_from_tiktoken_file_and_template(tok: Tokenizer, tmp_path: Path) -> None:
    shutil.copy(importlib.resources.files("llama_models.llama3") / "tokenizer.model", tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.apply_chat_template([{"role": "user", "content": "hey"}], tokenize=False) == (
        "<|begin_of_text|>hey"
    )


def test_load_bare_dir_and_missing_path(tok: Tokenizer, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    loaded = load_tokenizer(tmp_path)
    assert loaded.vocab_size == 128256
    assert loaded.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    assert loaded.chat_template == CHAT_TEMPLATE
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_tokenizer(missing)


def test_unreadable_tokenizer_json(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_missing_required_specials(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="eot_id"):
        Tokenizer(None, {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001})


def test_default_load_is_cached() -> None:
    a, b = load_tokenizer(), load_tokenizer(None)
    assert a.encoding is b.encoding


def _spy_runs(tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the longest run of whitespace or non-whitespace in each text handed to tiktoken."""
    lengths: list[int] = []
    real = tok.encoding.encode_ordinary

    def spy(text: str) -> list[int]:
        lengths.append(max((len(run) for run in re.findall(r"\S+|\s+", text)), default=0))
        return real(text)

    monkeypatch.setattr(tok.encoding, "encode_ordinary", spy)
    return lengths


def test_long_unbroken_text_is_cut_before_the_bpe(
    tok: Tokenizer, reference: tiktoken.Encoding, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One 1 MB "word": tiktoken alone gets it as a single piece, whose BPE time grows faster
    # than linearly (200 MB: > 10 min at 10 GB); now no run handed to it exceeds 25k characters.
    text = "start " + "x" * 1_000_000 + " mid " + "é" * 60_000 + "🙂" * 30_000 + " end"
    longest = _spy_runs(tok, monkeypatch)
    ids = tok.encode(text)
    assert max(longest) == 25_000
    assert tok.decode(ids) == text  # byte-exact
    assert tok.encode_batch([text, "ok"]) == [ids, tok.encode("ok")]
    below = "y" * 24_000 + " and " + "z" * 100  # shorter runs tokenize exactly as before
    assert tok.encode(below) == reference.encode_ordinary(below)


def test_cut_never_splits_a_special_token(tok: Tokenizer) -> None:
    for offset in range(1, 10):  # the cut falls on every position inside `<|eot_id|>`
        text = "b" * (25_000 - offset) + "<|eot_id|>" + "c" * 30_000
        ids = tok.encode(text, allowed_special="all")
        assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == text


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "lines of template",
        ),
        ("{{ 'a' * 10**10 }}", "a product of over 10,000,000 items"),
        ("{{ 2 ** 10000000 }}", "a power of over 64 kbit"),
        ("{% for i in range(100000) %}{{ 'x' * 200 }}{% endfor %}", "over 10,000,000 characters of output"),
        ("{{ raise_exception('bad roles') }}", "bad roles"),
        ("{% for m in messages %}", "does not compile"),
    ],
)
def test_hostile_chat_templates_fail_fast_with_a_clear_error(template: str, needle: str) -> None:
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match="chat template") as info:
        Tokenizer(chat_template=template).apply_chat_template(chat_messages("hi"))
    assert needle in str(info.value) and time.perf_counter() - start < 5
