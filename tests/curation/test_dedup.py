"""Deduplication: exact hashes, MinHash-LSH and SemDeDup on planted near-duplicates of real text."""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SHARED_DATA, small_config
from mobilellm_r1.curation.dedup import (
    MinHashConfig,
    SemDedupConfig,
    UnionFind,
    exact_duplicates,
    kmeans,
    minhash_duplicates,
    model_embedder,
    normalize_text,
    run_dedup,
    semantic_duplicates,
    shingles,
    text_hash,
)
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import load_tokenizer

WIKITEXT = SHARED_DATA / "corpora" / "wikitext2" / "valid.txt"
N_ORIG, N_DUP = 600, 200


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    """Wikipedia paragraphs (wikitext-2 valid) of at least 50 words, headings dropped."""
    lines = (line.strip() for line in WIKITEXT.read_text(encoding="utf-8").splitlines())
    paras = [p for p in lines if p and not p.startswith("=") and len(p.split()) >= 50]
    assert len(paras) >= N_ORIG
    return paras[:N_ORIG]


def perturb(text: str, rng: random.Random, rate: tuple[float, float], vocab: list[str]) -> str:
    """Delete or substitute a rate of the words (half each), then change case and whitespace."""
    p = rng.uniform(*rate)
    words = []
    for word in text.split():
        r = rng.random()
        if r >= p:
            words.append(word)
        elif r >= p / 2:
            words.append(rng.choice(vocab))
    out = " ".join(words)
    out = out.lower() if rng.random() < 0.3 else out.upper() if rng.random() < 0.2 else out
    return re.sub(" ", lambda _: rng.choice([" ", " ", "  ", "\n", "\t"]), out)


def planted(paragraphs: list[str], rate: tuple[float, float], seed: int = 0) -> tuple[list[str], list[int]]:
    """Originals followed by N_DUP perturbed copies; returns (texts, original index of each copy)."""
    rng = random.Random(seed)
    vocab = [w for p in paragraphs for w in p.split()]
    sources = rng.sample(range(len(paragraphs)), N_DUP)
    return paragraphs + [perturb(paragraphs[i], rng, rate, vocab) for i in sources], sources


def recall_fpr(dup_of: list[int | None], sources: list[int]) -> tuple[float, float]:
    """Recall: planted pairs of which one member was removed.  FPR: originals removed for any reason
    other than their own planted copy."""
    n = len(dup_of) - len(sources)
    found = sum(dup_of[n + k] is not None or dup_of[src] is not None for k, src in enumerate(sources))
    copies = {src: n + k for k, src in enumerate(sources)}
    wrong = sum(dup_of[i] is not None and dup_of[i] != copies.get(i) for i in range(n))
    return found / len(sources), wrong / n


# ------------------------------------------------------------------ exact
def test_normalisation_and_exact_duplicates() -> None:
    assert normalize_text("  Ｆｕｌｌ\u00a0WIDTH\n\t ﬁne  ") == "full width fine"
    texts = ["Hello  World", "hello world\n", "HELLO\tWORLD", "hello, world", "Hello  World"]
    assert exact_duplicates(texts) == [None, 0, 0, None, 0]
    assert exact_duplicates(texts, "xxh64") == [None, 0, 0, None, 0]
    assert text_hash("A b") == text_hash("a  B") != text_hash("a b c")
    assert len(text_hash("x", "xxh128")) == 32 and len(text_hash("x")) == 40


# ------------------------------------------------------------------ minhash
def test_shingles_and_union_find() -> None:
    assert shingles("Ab  cd", "char", 3) == {b"ab ", b"b c", b" cd"}
    assert shingles("one two three", "word", 2) == {b"one two", b"two three"}
    assert shingles("hi", "char", 5) == {b"hi"}
    sets = UnionFind(5)
    sets.union(3, 4)
    sets.union(4, 1)
    assert [sets.find(i) for i in range(5)] == [0, 1, 2, 1, 1]


def test_minhash_light_edits_at_default_threshold(paragraphs) -> None:
    texts, sources = planted(paragraphs, (0.0, 0.02))
    recall, fpr = recall_fpr(minhash_duplicates(texts), sources)
    print(f"MinHash char-5 @0.8, <=2% word edits + case/whitespace: recall {recall:.3f}, FPR {fpr:.4f}")
    assert recall >= 0.95 and fpr <= 0.01


def test_minhash_planted_5_to_10_percent_edits(paragraphs) -> None:
    texts, sources = planted(paragraphs, (0.05, 0.10))
    dup_of = minhash_duplicates(texts, MinHashConfig(threshold=0.6))
    recall, fpr = recall_fpr(dup_of, sources)
    default_recall, _ = recall_fpr(minhash_duplicates(texts), sources)
    print(
        f"MinHash char-5, 5-10% word edits: @0.6 recall {recall:.3f} FPR {fpr:.4f}; "
        f"@0.8 recall {default_recall:.3f}"
    )
    assert recall >= 0.95 and fpr <= 0.01
    assert all(dup_of[N_ORIG + k] == src for k, src in enumerate(sources) if dup_of[N_ORIG + k] is not None)


def test_minhash_keeps_one_per_chain() -> None:
    base = " ".join(f"w{i}" for i in range(60))
    b = base.replace("w10 ", "x ").replace("w20 ", "y ")
    c = b.replace("w30 ", "z ").replace("w40 ", "v ")
    other = " ".join(f"u{i}" for i in range(60))
    assert minhash_duplicates([base, other, b, c], MinHashConfig(threshold=0.7)) == [None, None, 0, 0]


# ------------------------------------------------------------------ semantic
def hashed_ngrams(texts: list[str], dim: int = 512, n: int = 4) -> torch.Tensor:
    """Bag of hashed character 4-grams (log counts, centred): near-duplicates are near."""
    rows = []
    for text in texts:
        norm = normalize_text(text)
        ids = [zlib.crc32(norm[i : i + n].encode()) % dim for i in range(len(norm) - n + 1)]
        rows.append(np.bincount(ids, minlength=dim))
    x = torch.log1p(torch.tensor(np.stack(rows), dtype=torch.float32))
    return x - x.mean(dim=0, keepdim=True)


@pytest.mark.parametrize("keep", ["first", "centroid"])
def test_semdedup_planted_duplicates(paragraphs, keep) -> None:
    texts, sources = planted(paragraphs, (0.05, 0.10))
    dup_of = semantic_duplicates(hashed_ngrams(texts), SemDedupConfig(threshold=0.7, keep=keep))
    recall, fpr = recall_fpr(dup_of, sources)
    print(f"SemDeDup (hashed 4-grams, cos > 0.7, keep={keep}): recall {recall:.3f}, FPR {fpr:.4f}")
    assert recall >= 0.95 and fpr <= 0.01


def test_kmeans_recovers_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=1)
    labels = torch.arange(200) % 4
    x = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(200, 16, generator=gen), dim=1)
    cents, assign = kmeans(x, 4, seed=1)
    assert cents.shape == (4, 16) and torch.allclose(cents.norm(dim=1), torch.ones(4))
    mapping = {int(labels[i]): int(assign[i]) for i in range(200)}
    assert len(set(mapping.values())) == 4 and all(
        mapping[int(labels[i])] == int(assign[i]) for i in range(200)
    )


def test_semdedup_keep_rule() -> None:
    """Three near-identical points: `centroid` keeps the most central one, `first` the first."""
    x = torch.tensor([[1.0, 0.10], [1.0, 0.0], [1.0, 0.05], [-1.0, 0.0]])
    cfg = SemDedupConfig(threshold=0.99, n_clusters=2)
    assert semantic_duplicates(x, cfg) == [2, 2, None, None]
    assert semantic_duplicates(x, SemDedupConfig(threshold=0.99, n_clusters=2, keep="first")) == [
        None,
        0,
        0,
        None,
    ]


# ------------------------------------------------------------------ jsonl pipeline
def test_run_dedup_pipeline(paragraphs, tmp_path) -> None:
    base = paragraphs[:6]
    heavy = perturb(base[4], random.Random(1), (0.12, 0.12), base[5].split())  # too edited for MinHash
    texts = [*base, base[0].upper(), base[1].replace("the", "a", 1), heavy, base[3]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    report = run_dedup(
        src,
        tmp_path / "out.jsonl",
        minhash=MinHashConfig(),
        semantic=SemDedupConfig(threshold=0.7, keep="first"),
        embed=hashed_ngrams,
        removed_output=tmp_path / "removed.jsonl",
    )
    kept = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    removed = [json.loads(line) for line in (tmp_path / "removed.jsonl").read_text().splitlines()]
    assert kept == [0, 1, 2, 3, 4, 5]
    assert {r["id"]: (r["dedup_stage"], r["duplicate_of"]) for r in removed} == {
        6: ("exact", f"{src}:1"),
        7: ("minhash", f"{src}:2"),
        8: ("semantic", f"{src}:5"),
        9: ("exact", f"{src}:4"),
    }
    assert report == {"read": 10, "kept": 6, "removed": {"exact": 2, "minhash": 1, "semantic": 1}}
    with pytest.raises(ValueError, match="embed function"):
        run_dedup(src, tmp_path / "x.jsonl", semantic=SemDedupConfig())


def test_semantic_stage_with_model_embeddings(tmp_path) -> None:
    """Mean-pooled states of a (random) model: copies embed identically and are removed semantically."""
    tok = load_tokenizer()
    cfg = small_config(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=[])
    model = build_model(cfg, seed=0).eval()
    texts = ["alpha beta gamma", "a completely different sentence here", "alpha beta gamma", "x y"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    report = run_dedup(
        src,
        tmp_path / "out.jsonl",
        exact=None,
        semantic=SemDedupConfig(threshold=0.999, n_clusters=1),
        embed=model_embedder(model, tok, batch_size=3),
    )
    assert report["removed"] == {"exact": 0, "minhash": 0, "semantic": 1}
    assert [json.loads(line)["text"] for line in Path(tmp_path / "out.jsonl").read_text().splitlines()] == [
        t for i, t in enumerate(texts) if i != 2
    ]
