"""Train a byte-level BPE tokenizer on your own corpus, in the Llama-3 layout.

The paper's models use the Llama-3 vocabulary (128,256 ids). For a small model on a narrow corpus
that vocabulary is most of the compute: at the `tiny` preset the LM head over 128k ids costs ~95%
of each step's FLOPs. A vocabulary learned on the corpus itself (a few thousand ids) makes the
same model ~10x cheaper per token, which is what lets `e2e/tiny_cpu` train far enough on two CPU
cores for SFT and GRPO to change what the model does.

The result keeps everything else of Llama 3, so every later stage works unchanged:
  * the same pre-tokenization split regex (llama.cpp's `llama-bpe` pre-tokenizer hard-codes it,
    so GGUF exports tokenize identically), or with `single_digits` the same regex with one digit
    per piece (Qwen2's; llama.cpp's `qwen2` pre-tokenizer), so numbers never merge into
    whole-number tokens;
  * the 256 Llama-3 special tokens, placed right after the learned ids, and the same chat
    template;
  * ranks equal ids (merges in the order they were learned), as tiktoken needs.

Training is Hugging Face `tokenizers`' BPE trainer (deterministic for the same texts in the
same order); the output directory loads with :func:`mobilellm_r1.tokenizer.load_tokenizer` and
with `transformers.AutoTokenizer`.

    mobilellm-r1 data train-tokenizer --recipe data/synthetic_noisy --chats 'data/synth/sft/*.jsonl' \
        --vocab-size 4096 --out data/tokenizer
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..tokenizer import (
    LLAMA3_PAT_STR,
    NUM_SPECIAL_TOKENS,
    SINGLE_DIGIT_PAT_STR,
    Tokenizer,
    llama3_special_tokens,
    ranks_from_byte_level_vocab,
)
from .records import iter_jsonl
from .sources import SourceSpec, iter_documents

BYTE_TOKENS = 256
# bytes + specials + at least one merge (llama.cpp's loader needs one)
MIN_VOCAB = BYTE_TOKENS + NUM_SPECIAL_TOKENS + 1


def train_bpe(
    texts: Iterable[str], vocab_size: int, name: str = "trained", single_digits: bool = False
) -> Tokenizer:
    """Learn `vocab_size - 256` byte-level BPE ids on `texts`, then add the 256 Llama-3 specials.

    The vocabulary may come out smaller when the texts hold fewer distinct merges; the returned
    tokenizer's `vocab_size` is the real count. `single_digits` splits every digit apart before
    BPE (`SINGLE_DIGIT_PAT_STR`), so no learned id spans two digits.
    """
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"vocab_size must be >= {MIN_VOCAB} (256 bytes + 256 specials + 1), got {vocab_size}"
        )
    pat_str = SINGLE_DIGIT_PAT_STR if single_digits else LLAMA3_PAT_STR
    model = HFTokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pat_str), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - NUM_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer)
    ranks = ranks_from_byte_level_vocab(model.get_vocab(), set())
    if len(ranks) <= BYTE_TOKENS:
        raise ValueError("the texts gave no BPE merge; train on more text")
    return Tokenizer(ranks, llama3_special_tokens(len(ranks)), pat_str=pat_str, name_or_path=name)


def chat_texts(patterns: Sequence[str]) -> Iterator[str]:
    """The message contents of every row of chat JSONL files (rows with a `messages` list)."""
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in paths:
            for row, where in iter_jsonl(path):
                yield from _message_contents(row, where)


def _message_contents(row: Any, where: str) -> Iterator[str]:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list):
        raise ValueError(f"{where}: a chat row needs a 'messages' list")
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ValueError(f"{where}: messages[{i}] needs a string 'content'")
        yield content


def source_texts(specs: Sequence[SourceSpec]) -> Iterator[str]:
    """The text of every document of the given sources, source after source."""
    for spec in specs:
        for document in iter_documents(spec):
            yield document.text
