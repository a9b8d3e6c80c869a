"""Deduplication: exact (normalised-text hash), MinHash-LSH near-duplicates, semantic (SemDeDup).

Each method returns ``duplicate_of``: for every document None (kept) or the index of the document
it duplicates (removed): for exact and MinHash the first, kept document of its group.

* Exact: the hash of the normalised text (NFKC, lower case, whitespace runs -> one space, stripped);
  the first document of each hash is kept.
* MinHash (Broder 1997; LSH banding as in Leskovec et al., "Mining of Massive Datasets", ch. 3):
  ``datasketch`` MinHash signatures of the normalised text's character or word n-gram shingles,
  candidate pairs from ``MinHashLSH``, kept as duplicates when the estimated Jaccard similarity is
  >= the threshold (``verify``; else every LSH candidate counts).  Pairs are joined with union-find
  and the first document of each connected cluster is kept, so chains A~B~C are one cluster even
  when A and C are not similar.
* Semantic (SemDeDup, Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale through
  semantic deduplication"): L2-normalised embeddings are clustered with spherical k-means (torch);
  inside each cluster the documents are ordered (closest to the centroid first, or input order) and
  a document is removed when its cosine similarity to any earlier one of that order exceeds the
  threshold (the paper's rule: the earlier one may itself be removed).

:func:`run_dedup` chains the three on JSONL files.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import JsonlWriter, PathLike, optional_writer, read_records
from ..eval.rankme import embed_texts
from .filters import batched
from .progress import count_records, progress_bar

Embedder = Callable[[list[str]], torch.Tensor]


# ====================================================================== exact
def normalize_text(text: str) -> str:
    """NFKC, lower case, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def text_hash(text: str, algorithm: str = "sha1") -> str:
    """Hex digest of the normalised text: any ``hashlib`` algorithm, or ``xxh64`` / ``xxh128``
    (``xxhash``, installed with ``datasets``)."""
    data = normalize_text(text).encode("utf-8")
    if algorithm.startswith("xxh"):
        import xxhash

        return getattr(xxhash, algorithm)(data).hexdigest()
    return hashlib.new(algorithm, data).hexdigest()


def exact_duplicates(texts: Sequence[str], algorithm: str = "sha1") -> list[int | None]:
    """``duplicate_of`` per text: the first text with the same normalised hash, or None."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        h = text_hash(text, algorithm)
        out.append(first.get(h))
        first.setdefault(h, i)
    return out


# ====================================================================== minhash
@dataclass(frozen=True)
class MinHashConfig:
    """MinHash-LSH settings.

    shingle / ngram: character n-grams (default 5; robust to tokenisation) or word n-grams of the
        normalised text; a text shorter than n gives one shingle, itself.
    num_perm: permutations per signature.  threshold: Jaccard similarity counted as duplicate.
    verify: confirm LSH candidates by the signatures' estimated Jaccard (fewer false positives).
    seed: datasketch's permutation seed.

    Measured on Wikipedia paragraphs (tests/curation/test_dedup.py): at threshold 0.8 on character
    5-grams, copies with case / whitespace changes and <= 2% of words edited are all found; copies
    with 5-10% of their words substituted or deleted (Jaccard ~0.6-0.9) need a threshold of 0.6
    (recall 97%, no false positives; 0.8 finds about half of them).
    """

    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    verify: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shingle not in ("char", "word") or self.ngram < 1:
            raise ValueError(
                f"shingle must be 'char' or 'word' and ngram >= 1, got {self.shingle}, {self.ngram}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


def shingles(text: str, kind: str = "char", n: int = 5) -> set[bytes]:
    """The set of character / word n-grams of the normalised text (UTF-8 encoded)."""
    norm = normalize_text(text)
    if kind == "char":
        grams = {norm[i : i + n] for i in range(max(1, len(norm) - n + 1))}
    else:
        words = norm.split()
        grams = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
    return {g.encode("utf-8") for g in grams}


def minhash_signatures(texts: Sequence[str], cfg: MinHashConfig | None = None) -> list[Any]:
    """``datasketch.LeanMinHash`` signature of each text."""
    from datasketch import LeanMinHash, MinHash

    cfg = cfg or MinHashConfig()
    sets = [shingles(t, cfg.shingle, cfg.ngram) for t in texts]
    return [LeanMinHash(m) for m in MinHash.bulk(sets, num_perm=cfg.num_perm, seed=cfg.seed)]


class UnionFind:
    """Disjoint sets over 0..n-1 whose root is always the smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def minhash_clusters(
    signatures: Sequence[Any],
    cfg: MinHashConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> UnionFind:
    """Union-find over documents joined by LSH candidate pairs (confirmed when ``cfg.verify``);
    ``progress(1)`` after each document."""
    from datasketch import MinHashLSH

    cfg = cfg or MinHashConfig()
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    sets = UnionFind(len(signatures))
    for i, sig in enumerate(signatures):
        for j in lsh.query(sig):
            if not cfg.verify or sig.jaccard(signatures[j]) >= cfg.threshold:
                sets.union(i, j)
        lsh.insert(i, sig, check_duplication=False)
        if progress is not None:
            progress(1)
    return sets


def minhash_duplicates(texts: Sequence[str], cfg: MinHashConfig | None = None) -> list[int | None]:
    """``duplicate_of`` per text: the first document of its near-duplicate cluster, or None."""
    sets = minhash_clusters(minhash_signatures(texts, cfg), cfg)
    roots = [sets.find(i) for i in range(len(texts))]
    return [None if r == i else r for i, r in enumerate(roots)]


# ====================================================================== semantic
@dataclass(frozen=True)
class SemDedupConfig:
    """SemDeDup settings.

    threshold: cosine similarity above which two documents are duplicates (tune it per embedding
        model: mean-pooled LM states are anisotropic, so unrelated texts can exceed 0.9).
    n_clusters: k-means clusters; None: ceil(sqrt(N)).  More clusters are faster but may split
        a duplicate pair.
    keep: ``centroid`` keeps, of similar documents, the one closest to the cluster centroid
        (SemDeDup's centroid-ordered pass); ``first`` keeps the earliest in input order.
    kmeans_iters / seed: Lloyd iterations and the seed of the k-means++ initialisation.
    """

    threshold: float = 0.95
    n_clusters: int | None = None
    keep: Literal["centroid", "first"] = "centroid"
    kmeans_iters: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.keep not in ("centroid", "first"):
            raise ValueError(f"keep must be 'centroid' or 'first', got {self.keep!r}")


def _max_similarity(
    x: torch.Tensor, c: torch.Tensor, chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of x: (max cosine to the rows of c, its index); x and c unit-norm."""
    vals, idx = [], []
    for s in range(0, x.shape[0], chunk):
        v, i = (x[s : s + chunk] @ c.T).max(dim=1)
        vals.append(v)
        idx.append(i)
    return torch.cat(vals), torch.cat(idx)


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on the unit sphere (distance 1 - cosine)."""
    first = int(torch.randint(x.shape[0], (1,), generator=gen))
    chosen = [first]
    best = x @ x[first]
    for _ in range(1, k):
        dist = (1.0 - best).clamp(min=0).double().cpu()
        if float(dist.sum()) <= 0:
            nxt = int(torch.randint(x.shape[0], (1,), generator=gen))
        else:
            nxt = int(torch.multinomial(dist / dist.sum(), 1, generator=gen))
        chosen.append(nxt)
        best = torch.maximum(best, x @ x[nxt])
    return x[chosen].clone()


def kmeans(x: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means of unit rows x [N, d]: (unit centroids [k, d], assignment [N]).

    k-means++ seeding, then Lloyd steps (assign by cosine, centroid = normalised mean) until the
    assignment stops changing; an empty cluster keeps its previous centroid.
    """
    k = max(1, min(k, x.shape[0]))
    centroids = _kmeanspp(x, k, torch.Generator().manual_seed(seed))
    assign = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        new = _max_similarity(x, centroids)[1]
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        centroids = torch.where((counts > 0)[:, None], F.normalize(sums, dim=1), centroids)
    return centroids, assign


def _cluster_duplicates(
    x: torch.Tensor, threshold: float, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ordered unit rows x: (is duplicate of an earlier row, index of the most similar earlier row)."""
    n = x.shape[0]
    is_dup = torch.zeros(n, dtype=torch.bool, device=x.device)
    partner = torch.zeros(n, dtype=torch.long, device=x.device)
    for s in range(1, n, chunk):
        e = min(n, s + chunk)
        sims = x[s:e] @ x[:e].T  # [b, e]
        rows = torch.arange(s, e, device=x.device)
        sims.masked_fill_(torch.arange(e, device=x.device)[None, :] >= rows[:, None], -2.0)
        best, idx = sims.max(dim=1)
        is_dup[s:e], partner[s:e] = best > threshold, idx
    return is_dup, partner


def semantic_duplicates(embeddings: torch.Tensor, cfg: SemDedupConfig | None = None) -> list[int | None]:
    """``duplicate_of`` per embedding row (see the module docstring): the most similar earlier
    document of its cluster's keep order when above the threshold, else None."""
    cfg = cfg or SemDedupConfig()
    n = embeddings.shape[0]
    if n == 0:
        return []
    x = F.normalize(embeddings.detach().float(), dim=1)
    k = cfg.n_clusters or math.ceil(math.sqrt(n))
    centroids, assign = kmeans(x, k, iters=cfg.kmeans_iters, seed=cfg.seed)
    out: list[int | None] = [None] * n
    for c in range(centroids.shape[0]):
        members = torch.nonzero(assign == c).flatten()
        if members.numel() < 2:
            continue
        if cfg.keep == "centroid":  # most central first; ties by index (members are ascending)
            members = members[torch.argsort(-(x[members] @ centroids[c]), stable=True)]
        is_dup, partner = _cluster_duplicates(x[members], cfg.threshold)
        for j in torch.nonzero(is_dup).flatten().tolist():
            out[int(members[j])] = int(members[partner[j]])
    return out


def model_embedder(
    model: nn.Module, tokenizer: Any, *, batch_size: int = 16, max_tokens: int = 512
) -> Embedder:
    """``embed(texts) -> [N, d]``: mean-pooled final hidden states of our model (:func:`embed_texts`)."""

    def embed(texts: list[str]) -> torch.Tensor:
        return embed_texts(model, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens)

    return embed


# ====================================================================== jsonl driver
def _exact_and_minhash(
    inputs: PathLike | Sequence[PathLike],
    text_field: str,
    exact: str | None,
    minhash: MinHashConfig | None,
    total: int,
) -> tuple[list[tuple[str, int] | None], list[str]]:
    """Pass 1: (stage, duplicate_of) or None per row, and the row locations (``total``: the row
    count, for the progress bar)."""
    verdicts: list[tuple[str, int] | None] = []
    locations: list[str] = []
    first: dict[str, int] = {}
    signatures, sig_rows = [], []
    stages = "+".join(s for s, on in (("exact", exact), ("minhash signatures", minhash)) if on is not None)
    with progress_bar(f"dedup: read, {stages or 'no stage'}", total) as bar:
        for chunk in batched(read_records(inputs, text_field), 1024):
            survivors = []
            for rec in chunk:
                i = len(verdicts)
                locations.append(rec.location)
                h = text_hash(rec.text, exact) if exact else None
                if h is not None and h in first:
                    verdicts.append(("exact", first[h]))
                    continue
                if h is not None:
                    first[h] = i
                verdicts.append(None)
                survivors.append((i, rec.text))
            if minhash is not None and survivors:
                signatures += minhash_signatures([t for _, t in survivors], minhash)
                sig_rows += [i for i, _ in survivors]
            bar.update(len(chunk))
    if minhash is not None and signatures:
        with progress_bar("dedup: minhash LSH", len(signatures)) as lsh_bar:
            sets = minhash_clusters(signatures, minhash, progress=lsh_bar.update)
        for pos, row in enumerate(sig_rows):
            root = sets.find(pos)
            if root != pos:
                verdicts[row] = ("minhash", sig_rows[root])
    return verdicts, locations


def _semantic(
    inputs: PathLike | Sequence[PathLike],
    text_field: str,
    verdicts: list[tuple[str, int] | None],
    embed: Embedder,
    cfg: SemDedupConfig,
) -> None:
    """Pass 2: embed the surviving rows and mark semantic duplicates in ``verdicts``."""
    rows, parts = [], []
    survivors = (
        (i, rec.text) for i, rec in enumerate(read_records(inputs, text_field)) if verdicts[i] is None
    )
    todo = sum(v is None for v in verdicts)
    with progress_bar("dedup: semantic embed", todo) as bar:
        for chunk in batched(survivors, 1024):
            rows += [i for i, _ in chunk]
            parts.append(embed([t for _, t in chunk]).float().cpu())
            bar.update(len(chunk))
    if not rows:
        return
    for pos, dup in enumerate(semantic_duplicates(torch.cat(parts), cfg)):
        if dup is not None:
            verdicts[rows[pos]] = ("semantic", rows[dup])


def run_dedup(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    text_field: str = "text",
    exact: str | None = "sha1",
    minhash: MinHashConfig | None = None,
    semantic: SemDedupConfig | None = None,
    embed: Embedder | None = None,
    removed_output: PathLike | None = None,
) -> dict[str, Any]:
    """Deduplicate JSONL rows: exact (hash ``exact``; None skips it), then MinHash (when ``minhash``
    is given), then SemDeDup (when ``semantic`` is given, with ``embed(texts) -> [N, d]``, e.g.
    :func:`model_embedder`), each stage on the survivors of the previous ones.

    Kept rows are written unchanged to ``output`` (atomically).  ``removed_output`` receives the
    removed rows with ``dedup_stage`` and ``duplicate_of`` (the ``file:line`` of the row matched).
    Signatures and embeddings of all rows are held in memory.  Returns ``{"read", "kept",
    "removed": {"exact", "minhash", "semantic"}}``.
    """
    if semantic is not None and embed is None:
        raise ValueError("semantic deduplication needs an embed function (e.g. model_embedder(model, tok))")
    total = count_records(inputs, text_field)
    verdicts, locations = _exact_and_minhash(inputs, text_field, exact, minhash, total)
    if semantic is not None and embed is not None:
        _semantic(inputs, text_field, verdicts, embed, semantic)
    removed = {"exact": 0, "minhash": 0, "semantic": 0}
    with (
        JsonlWriter(output) as kept_out,
        optional_writer(removed_output) as removed_out,
        progress_bar("dedup: write", total) as bar,
    ):
        for i, rec in enumerate(read_records(inputs, text_field)):
            bar.update(1)
            verdict = verdicts[i]
            if verdict is None:
                kept_out.write(rec.row)
                continue
            removed[verdict[0]] += 1
            if removed_out is not None:
                removed_out.write(
                    {**rec.row, "dedup_stage": verdict[0], "duplicate_of": locations[verdict[1]]}
                )
    return {"read": len(verdicts), "kept": len(verdicts) - sum(removed.values()), "removed": removed}
