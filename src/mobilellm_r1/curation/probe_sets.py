"""Representative subsets and capability-probing sets for influence scoring (MobileLLM-R1 Eq. 2-4).

The paper scores every data source by its influence on three capability-probing sets (Eq. 2: the
dot product of a training sample's loss gradient with the probing set's loss gradient; Eq. 3-4:
summed over checkpoints and capabilities).  This module draws both inputs from a source list:

* a **representative subset** of ``representative_size`` distinct documents per source: the
  training samples whose influence is scored (``mobilellm-r1 curate influence``);
* one **probing set** per capability with ``probe_size`` documents, drawn evenly from the sources
  the paper's domain assignment gives it (:data:`PAPER_DOMAINS`), keeping only documents whose
  quality score is > ``score_threshold`` (the paper keeps FineWeb-Edu-classifier scores > 4; the
  score is a row field, e.g. the ``quality_score`` that ``curate filter --classifier`` writes).

Sampling is priority (bottom-k) reservoir sampling: each document's key is a seeded hash of its
text, and a source keeps the k smallest keys in a heap while it streams, so huge files and hub
datasets are read once with O(k) memory, the sample does not depend on the file order, and exact
duplicates (same text, same key) are never taken twice.  Probing documents are disjoint from every
representative subset (a probe text is never also scored as a training sample) and from each
other across capabilities.

Outputs (each written atomically): ``<out>/representative/<source>.jsonl`` and
``<out>/probe/<capability>.jsonl`` (rows ``id``, ``source``, ``text``; probes also ``score`` when a
threshold is set), and ``<out>/manifest.json`` (counts, seed, config).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..data.formats import check_format
from ..data.recipes import SynthSection, recipe_path
from ..data.records import JsonlWriter
from ..data.sources import DataError, RowFormatter, SourceSpec, source_rows
from ..typed_config import bounded, load_config, to_dict
from .progress import progress_bar

# The paper's domain assignment: the sources each capability-probing set is drawn from.
PAPER_DOMAINS: dict[str, tuple[str, ...]] = {
    "code": ("starcoder", "stackexchange", "nemotron_code", "cosmopedia", "natural_reasoning", "pes2o"),
    "math": (
        "openwebmath",
        "finemath",
        "algebraic_stack",
        "nemotron_math",
        "cosmopedia",
        "natural_reasoning",
        "pes2o",
    ),
    "knowledge": (
        "fineweb_edu",
        "wiki",
        "arxiv",
        "cosmopedia",
        "nemotron_science",
        "natural_reasoning",
        "pes2o",
    ),
}


# ====================================================================== config
@dataclass
class ProbeSource:
    """One data source: where its rows are (``files`` under ``data_root``, else the hub dataset
    ``hub_id`` / ``subset`` streamed), how a row becomes text, and the capabilities it serves."""

    name: str
    capabilities: list[str] = field(default_factory=list)  # probing sets it feeds; [] = representative only
    files: list[str] = field(default_factory=list)  # files, globs or directories (jsonl / parquet)
    hub_id: str | None = None  # HF dataset, streamed when no files are given
    subset: str | None = None  # HF config name of hub_id
    split: str = "train"
    format: str = "auto"  # a key of data.formats.FORMATS, or "auto"
    text_field: str = "text"
    template: str | None = None  # str.format template over row fields instead of text_field
    id_field: str = "id"  # row ids (the row's location when absent)
    score_field: str | None = None  # overrides ProbeSetsConfig.score_field for this source
    max_rows: int | None = None  # read only the first rows (a cap for huge hub datasets)

    def __post_init__(self) -> None:
        if not self.files and not self.hub_id:
            raise ValueError(f"source {self.name!r}: give files or hub_id")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"source {self.name!r}: max_rows must be >= 1, got {self.max_rows}")
        check_format(self.format)

    def specs(self, data_root: str | os.PathLike, score_field: str | None) -> tuple[SourceSpec, SourceSpec]:
        """(the text spec, the reading spec that also fetches the id and score columns)."""
        if self.files:
            root = Path(data_root)
            path = [f if Path(f).is_absolute() else str(root / f) for f in self.files]
            where: dict[str, Any] = {"path": path, "format": self.format}
        else:
            where = {"path": self.hub_id, "format": "hf", "hf_config": self.subset, "hf_streaming": True}
        common = dict(name=self.name, text_field=self.text_field, template=self.template, hf_split=self.split)
        extra = tuple(f for f in (self.id_field, score_field) if f)
        return SourceSpec(**common, **where), _ReadSpec(**common, **where, extra_fields=extra)


@dataclass
class ProbeSetsConfig:
    """What to draw: sources, per-source and per-capability sizes, seed and the probe quality cut."""

    sources: list[ProbeSource]
    capabilities: list[str] = field(default_factory=lambda: list(PAPER_DOMAINS))
    representative_size: int = 10_000  # N documents per source
    probe_size: int = 10_000  # documents per capability-probing set
    seed: int = bounded(0, ge=0)
    score_field: str | None = None  # row field holding a quality score (e.g. quality_score)
    score_threshold: float | None = None  # probe candidates need score > this (paper: 4)
    data_root: str = "."  # base of relative files
    synth: SynthSection | None = None  # generate the embedded synthetic corpus first when missing
    name: str = "probe_sets"
    description: str = ""

    def __post_init__(self) -> None:
        if self.representative_size < 0 or self.probe_size < 0:
            raise ValueError("representative_size and probe_size must be >= 0")
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate name(s) {', '.join(dupes)}")
        for i, source in enumerate(self.sources):
            unknown = [c for c in source.capabilities if c not in self.capabilities]
            if unknown:
                raise ValueError(
                    f"sources.{i}.capabilities: unknown capability {unknown[0]!r} "
                    f"(capabilities: {', '.join(self.capabilities)})"
                )
            if self.score_threshold is not None and source.capabilities and not self.score_of(source):
                raise ValueError(f"sources.{i}: score_threshold is set but the source has no score_field")
        if self.probe_size:
            empty = [c for c in self.capabilities if not self.sources_of(c)]
            if empty:
                raise ValueError(
                    f"capability {empty[0]!r} has no source (list it in a source's capabilities)"
                )

    def score_of(self, source: ProbeSource) -> str | None:
        """The score field of ``source`` (its own, else the config's)."""
        return source.score_field or self.score_field

    def sources_of(self, capability: str) -> list[str]:
        """Names of the sources serving ``capability``, in config order."""
        return [s.name for s in self.sources if capability in s.capabilities]

    def quotas(self) -> dict[str, dict[str, int]]:
        """capability -> source -> probe documents: ``probe_size`` split evenly over the capability's
        sources (the remainder goes to the first ones)."""
        out = {}
        for capability in self.capabilities:
            names = self.sources_of(capability)
            base, rest = divmod(self.probe_size, len(names)) if names else (0, 0)
            out[capability] = {n: base + (i < rest) for i, n in enumerate(names)}
        return out


def load_probe_config(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> ProbeSetsConfig:
    """Read a probe-sets YAML (a path or a shipped name such as ``curation/probe_sets_synthetic``)."""
    return load_config(ProbeSetsConfig, recipe_path(name_or_path), overrides)


# ====================================================================== reading
@dataclass
class _ReadSpec(SourceSpec):
    """A SourceSpec whose Parquet / HF readers also fetch ``extra_fields`` (they read only ``fields``)."""

    extra_fields: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*super().fields, *self.extra_fields)))


@dataclass(frozen=True)
class _Doc:
    id: str
    source: str
    text: str
    digest: bytes
    score: float | None


def _score(row: dict[str, Any], name: str, where: str) -> float:
    if name not in row:
        raise DataError(where, f"missing score field {name!r}", "missing_field")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(where, f"score field {name!r} is {value!r}, not a number", "non_numeric_field")
    return float(value)


def _documents(source: ProbeSource, cfg: ProbeSetsConfig, stats: dict[str, int]) -> Iterator[_Doc]:
    """The non-empty documents of a source, with ids and (when a threshold is set) scores."""
    score_field = cfg.score_of(source) if cfg.score_threshold is not None and source.capabilities else None
    text_spec, read_spec = source.specs(cfg.data_root, score_field)
    formatter = RowFormatter(text_spec)
    for row, where in source_rows(read_spec):
        if stats["rows"] == source.max_rows:
            return
        if isinstance(row, DataError):
            raise row
        text = formatter.text(row, where)
        stats["rows"] += 1
        if not text:
            stats["empty"] += 1
            continue
        ident = row.get(source.id_field)
        score = _score(row, score_field, where) if score_field else None
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        yield _Doc(where if ident is None else str(ident), source.name, text, digest, score)


# ====================================================================== sampling
def sample_key(seed: int, purpose: str, source: str, digest: bytes) -> int:
    """The priority of a document (smaller = taken first): a seeded 64-bit hash of its text digest."""
    salt = f"{seed}\0{purpose}\0{source}\0".encode()
    return int.from_bytes(hashlib.blake2b(salt + digest, digest_size=8).digest(), "big")


class BottomK:
    """The ``k`` distinct documents with the smallest keys seen so far (priority reservoir sampling).

    A document whose digest is already held is ignored, so exact duplicates are taken once; a
    duplicate of an evicted document has a key above every held one and is never taken either.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[int, bytes, _Doc]] = []  # (-key, digest, doc): max-heap on key
        self._held: set[bytes] = set()

    def offer(self, key: int, doc: _Doc) -> None:
        if self.k == 0 or doc.digest in self._held:
            return
        item = (-key, doc.digest, doc)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        elif (-key, doc.digest) > self._heap[0][:2]:
            self._held.discard(heapq.heapreplace(self._heap, item)[1])
        else:
            return
        self._held.add(doc.digest)

    def docs(self) -> list[_Doc]:
        """The held documents, smallest key first."""
        return [doc for _, _, doc in sorted(self._heap, key=lambda t: (-t[0], t[1]))]


@dataclass
class _Drawn:
    representative: list[_Doc]
    candidates: list[_Doc]  # probe candidates outside this source's own subset, in key order
    stats: dict[str, int]


def _draw(source: ProbeSource, cfg: ProbeSetsConfig, probe_quota: int, label: str) -> _Drawn:
    """One streaming pass: the representative subset and enough probe candidates to fill
    ``probe_quota`` after removing the (at most ``representative_size``) representative ones.
    A bar labelled ``label`` counts the documents read (out of ``max_rows`` when set)."""
    stats = {"rows": 0, "empty": 0, "eligible": 0}
    reps = BottomK(cfg.representative_size)
    probes = BottomK(probe_quota + cfg.representative_size if probe_quota else 0)
    with progress_bar(label, source.max_rows, unit="doc", leave=False) as bar:
        for doc in _documents(source, cfg, stats):
            bar.update(1)
            reps.offer(sample_key(cfg.seed, "representative", source.name, doc.digest), doc)
            if probe_quota and (cfg.score_threshold is None or doc.score > cfg.score_threshold):
                stats["eligible"] += 1
                probes.offer(sample_key(cfg.seed, "probe", source.name, doc.digest), doc)
    chosen = reps.docs()
    taken = {d.digest for d in chosen}
    return _Drawn(chosen, [d for d in probes.docs() if d.digest not in taken], stats)


def _fresh(docs: list[_Doc], used: set[bytes]) -> Iterator[_Doc]:
    """``docs`` whose texts are not in ``used``, each added to ``used`` when handed out."""
    for doc in docs:
        if doc.digest not in used:
            used.add(doc.digest)
            yield doc


def _take(pool: Iterator[_Doc], need: dict[str, int]) -> dict[str, list[_Doc]]:
    """Deal ``pool`` round robin to the capabilities still short of their ``need``."""
    picked: dict[str, list[_Doc]] = {c: [] for c in need}
    while open_caps := [c for c, n in need.items() if len(picked[c]) < n]:
        for c in open_caps:
            doc = next(pool, None)
            if doc is None:
                return picked
            picked[c].append(doc)
    return picked


def _assign(drawn: dict[str, _Drawn], quotas: dict[str, dict[str, int]]) -> dict[str, list[_Doc]]:
    """Fill each capability's per-source quotas from the sources' candidates, skipping texts in any
    representative subset or already given to another probing set."""
    used = {d.digest for x in drawn.values() for d in x.representative}
    probes: dict[str, list[_Doc]] = {c: [] for c in quotas}
    for name, x in drawn.items():
        need = {c: q[name] for c, q in quotas.items() if q.get(name)}
        for c, docs in _take(_fresh(x.candidates, used), need).items():
            probes[c] += docs
    return probes


# ====================================================================== driver
def _rows(docs: list[_Doc], with_score: bool) -> list[dict[str, Any]]:
    rows = []
    for doc in docs:
        row = {"id": doc.id, "source": doc.source, "text": doc.text}
        if with_score and doc.score is not None:
            row["score"] = doc.score
        rows.append(row)
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> int:
    with JsonlWriter(path) as writer:
        for row in rows:
            writer.write(row)
    return writer.count


def build_probe_sets(cfg: ProbeSetsConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Draw the representative subsets and probing sets of ``cfg`` into ``out_dir`` (see the module
    docstring) and return the manifest (without the config)."""
    if cfg.synth is not None and not (Path(cfg.synth.out) / "manifest.json").exists():
        from ..data.synth import SynthConfig, generate

        generate(SynthConfig(seed=cfg.synth.seed).scaled(cfg.synth.scale), Path(cfg.synth.out))
    out, quotas = Path(out_dir), cfg.quotas()
    drawn: dict[str, _Drawn] = {}
    with progress_bar("probe-sets: sources", len(cfg.sources), unit="source") as bar:
        for i, s in enumerate(cfg.sources, 1):
            label = f"probe-sets: read {s.name} ({i}/{len(cfg.sources)})"
            drawn[s.name] = _draw(s, cfg, sum(q.get(s.name, 0) for q in quotas.values()), label)
            bar.update(1)
    probes = _assign(drawn, quotas)
    files: dict[str, int] = {}
    if cfg.representative_size:
        for name, x in drawn.items():
            path = f"representative/{name}.jsonl"
            files[path] = _write(out / path, _rows(x.representative, with_score=False))
    if cfg.probe_size:
        for c, docs in probes.items():
            files[f"probe/{c}.jsonl"] = _write(out / "probe" / f"{c}.jsonl", _rows(docs, with_score=True))
    manifest = {
        "name": cfg.name,
        "seed": cfg.seed,
        "representative_size": cfg.representative_size,
        "probe_size": cfg.probe_size,
        "score_threshold": cfg.score_threshold,
        "sources": {n: {**x.stats, "representative": len(x.representative)} for n, x in drawn.items()},
        "probes": {c: _probe_counts(docs, quotas[c]) for c, docs in probes.items()},
        "files": files,
    }
    atomic_write(out / "manifest.json", json.dumps({**manifest, "config": to_dict(cfg)}, indent=1) + "\n")
    return manifest


def _probe_counts(docs: list[_Doc], quota: dict[str, int]) -> dict[str, Any]:
    """Size of a probing set, per source, against its quota (``short``: sources that fell short)."""
    by_source = dict.fromkeys(quota, 0)
    for doc in docs:
        by_source[doc.source] += 1
    short = {n: quota[n] - k for n, k in by_source.items() if k < quota[n]}
    return {"count": len(docs), "by_source": by_source, "quota": quota, "short": short}
