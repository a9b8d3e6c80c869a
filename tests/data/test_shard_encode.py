"""Tests for mobilellm_r1.data.shard_encode: long documents encoded in pieces, in bounded memory."""

from __future__ import annotations

import io
import json
import string
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mobilellm_r1.data import shard_encode
from mobilellm_r1.data.shard_encode import encode_pieces, text_batches, write_ids
from mobilellm_r1.data.shards import ShardedSource, tokenize_source
from mobilellm_r1.data.sources import SourceSpec
from mobilellm_r1.tokenizer import Tokenizer, load_tokenizer

NO_SPACE = np.frombuffer((string.ascii_letters + string.digits + string.punctuation).encode(), np.uint8)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer()


def unbroken(n: int, seed: int = 0) -> str:
    """``n`` random letters, digits and punctuation, no whitespace (one run the tokenizer must cut)."""
    return NO_SPACE[np.random.default_rng(seed).integers(0, len(NO_SPACE), n)].tobytes().decode()


def mixed_long_text() -> str:
    """Long runs of every kind next to ordinary text, with special-token strings at cut points."""
    run = unbroken(60_000, seed=1)
    run = run[:24_990] + "<|end_of_text|>" + run[25_005:]  # straddles the first 25k cut
    return " ".join(
        [
            "Ordinary words first. ",
            run,
            " " * 70_000,
            "δέλτα数学🙂" * 9_000,  # 63k non-ASCII characters, no whitespace
            "\n".join(["x = 1"] * 5_000),
            "<|begin_of_text|>" * 3_000,
        ]
    )


def test_encode_pieces_concatenate_to_encode(tok: Tokenizer) -> None:
    text = mixed_long_text()
    pieces = list(encode_pieces(tok, text))
    assert len(pieces) > 5
    assert all(ids.dtype == np.dtype("<u4") for ids, _ in pieces)
    assert np.concatenate([ids for ids, _ in pieces]).tolist() == tok.encode(text)
    assert sum(n for _, n in pieces) == len(text.encode("utf-8"))
    # The unbroken run comes in pieces of 25k characters, the first cut moved back off the
    # "<|end_of_text|>" it would split (23 characters of text before the run).
    assert [n for _, n in pieces[:2]] == [23 + 24_990, 25_000]


def test_text_batches_keep_order_and_isolate_long_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shard_encode, "LONG_DOC_CHARS", 100)
    texts = ["a" * 10] * 5 + ["b" * 101] + ["c" * 40] * 3 + ["d" * 500, "e"]
    batches = list(text_batches(texts, max_docs=4, max_chars=70))
    assert [t for b in batches for t in b] == texts
    # 4 docs | a before b | b alone | 70 chars | c before d | d alone | e
    assert [len(b) for b in batches] == [4, 1, 1, 2, 1, 1, 1]
    assert list(text_batches([], max_docs=4)) == []


def test_long_and_short_documents_in_one_shard_equal_encode(
    tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths of write_ids, interleaved in one shard: every document's ids are encode's."""
    monkeypatch.setattr(shard_encode, "LONG_DOC_CHARS", 20_000)
    words = " ".join(["The answer is 42."] * 2_000)  # long, without any long run: one piece
    texts = ["short one", mixed_long_text(), "short two\n", words, "δέλτα", unbroken(30_000)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    report = tokenize_source(SourceSpec("mix", str(path)), tmp_path / "out", tok, workers=1, progress=False)
    src = ShardedSource(tmp_path / "out" / "mix")
    assert [src.doc(i).tolist() for i in range(len(texts))] == [tok.encode(t) for t in texts]
    assert report["text_bytes"] == sum(len(t.encode("utf-8")) for t in texts)

    buf = io.BytesIO()
    lens, nbytes = write_ids(buf, tok, [texts[1]])
    assert lens.tolist() == [len(tok.encode(texts[1]))] and nbytes == len(texts[1].encode("utf-8"))
    assert np.frombuffer(buf.getvalue(), "<u4").tolist() == tok.encode(texts[1])


def test_one_line_of_megabytes_is_tokenized_in_bounded_memory(tmp_path: Path, tok: Tokenizer) -> None:
    """Issue 17 #5: one long line without whitespace.  The old writer held the document's ids as
    a Python list (~36 bytes a token) and the file's bytes next to its text: the Python heap peaked
    at 21x the text here; now at 2x (the file's bytes while they are decoded)."""
    text = unbroken(3_000_000, seed=2)
    path = tmp_path / "line.txt"
    path.write_text(text, encoding="ascii")
    spec = SourceSpec("line", str(path), format="text")
    (tmp_path / "warm.txt").write_text("imports and caches first")
    warm = SourceSpec("warm", str(tmp_path / "warm.txt"), format="text")
    tokenize_source(warm, tmp_path / "out", tok, workers=1, progress=False)
    tracemalloc.start()
    try:
        tokenize_source(spec, tmp_path / "out", tok, workers=1, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * len(text), f"peak {peak / 1e6:.1f} MB for a {len(text) / 1e6:.0f} MB line"
    assert ShardedSource(tmp_path / "out" / "line").doc(0).tolist() == tok.encode(text)
