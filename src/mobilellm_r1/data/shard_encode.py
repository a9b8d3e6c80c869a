"""Documents to token ids for the shard writer (:mod:`.shards`), in bounded memory.

Documents are encoded in batches of at most ``batch_docs`` documents and about
:data:`BATCH_CHARS` characters through :meth:`~mobilellm_r1.tokenizer.Tokenizer.encode_batch`.
A document longer than :data:`LONG_DOC_CHARS` is encoded on its own, piece by piece at the
tokenizer's own cuts (:func:`~mobilellm_r1.tokenizer.split_long_runs`), each piece straight into a
uint32 array written to the shard: no Python list of its ids, no list of its pieces.  The ids are
those of ``Tokenizer.encode(text)`` whichever path a document takes, so shards do not depend on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np

from ..tokenizer import Tokenizer, split_long_runs

TOKEN_DTYPE = np.dtype("<u4")
# A document longer than this (characters) is encoded alone, piece by piece.
LONG_DOC_CHARS = 1 << 20
# A batch closes once its documents reach this many characters (bounds its lists of ids).
BATCH_CHARS = 1 << 22


def text_batches(texts: Iterable[str], max_docs: int, max_chars: int = BATCH_CHARS) -> Iterator[list[str]]:
    """``texts`` in order, in lists of at most ``max_docs`` texts that close once they reach
    ``max_chars`` characters; a text longer than :data:`LONG_DOC_CHARS` is a list of its own."""
    batch: list[str] = []
    chars = 0
    for text in texts:
        if batch and len(text) > LONG_DOC_CHARS:
            yield batch
            batch, chars = [], 0
        batch.append(text)
        chars += len(text)
        if len(batch) >= max_docs or chars >= max_chars or len(text) > LONG_DOC_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_pieces(tokenizer: Tokenizer, text: str) -> Iterator[tuple[np.ndarray, int]]:
    """(uint32 ids, UTF-8 bytes) of each piece of ``text`` cut by :func:`split_long_runs`, in order;
    the ids concatenated equal ``tokenizer.encode(text)`` (special-token strings are plain text)."""
    enc = tokenizer.encoding
    for piece in split_long_runs(text):
        ids = enc.encode_to_numpy(piece, allowed_special=frozenset(), disallowed_special=())
        yield ids.astype(TOKEN_DTYPE, copy=False), len(piece.encode("utf-8"))


def write_ids(
    f: BinaryIO, tokenizer: Tokenizer, texts: list[str], num_threads: int = 1
) -> tuple[np.ndarray, int]:
    """Write the ids of ``texts`` to ``f`` as little-endian uint32, documents back to back.

    Returns the token count of each text (int64) and the texts' total UTF-8 bytes.
    """
    if len(texts) == 1 and len(texts[0]) > LONG_DOC_CHARS:
        tokens = nbytes = 0
        for ids, piece_bytes in encode_pieces(tokenizer, texts[0]):
            f.write(ids)  # a contiguous array: written without a copy
            tokens, nbytes = tokens + len(ids), nbytes + piece_bytes
        return np.array([tokens], dtype=np.int64), nbytes
    ids = tokenizer.encode_batch(texts, num_threads=num_threads)
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=TOKEN_DTYPE, count=int(lens.sum()))
    f.write(flat.tobytes())
    return lens, sum(len(t.encode("utf-8")) for t in texts)
