"""Data recipes: which sources, with what token shares, for one training phase.

A recipe YAML (see `src/mobilellm_r1/recipes/data/`) lists sources with weights (any
positive scale; normalised), where each comes from (hub id / raw files) and where its
tokenized shards live (`<shards_root>/<name>` unless `path` is set). `data tokenize
--recipe` turns the raw files into shards; `build_loader` opens the shards as a
`MixtureLoader`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..typed_config import bounded, load_config
from .formats import check_format
from .mixture import MixtureLoader, TokenSource

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer
    from .sources import SourceSpec

RECIPE_PACKAGE = "mobilellm_r1.recipes"


@dataclass
class MixSource:
    """One source of a mixture."""

    name: str
    weight: float
    hub_id: str | None = None  # where the data is published (documentation and hub loading)
    subset: str | None = None  # subset / config / folder inside `hub_id`
    path: str | None = None  # tokenized shard directory (default: <shards_root>/<name>)
    files: list[str] = field(default_factory=list)  # raw files/globs for `data tokenize`
    format: str = "auto"  # a key of data.formats.FORMATS, or "auto"
    text_field: str = "text"
    template: str | None = None  # str.format template over row fields, e.g. "Q: {question}"
    on_error: Literal["raise", "skip"] = "raise"

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"source {self.name!r}: weight must be >= 0, got {self.weight}")
        check_format(self.format)


@dataclass
class SynthSection:
    """Generate the embedded synthetic corpus into `out` when it is not there yet."""

    out: str = "data/synth"
    seed: int = bounded(0, ge=0)
    scale: float = bounded(1.0, gt=0)


@dataclass
class MixtureRecipe:
    """A phase's mixture: sources and weights, packing length and seed."""

    name: str
    sources: list[MixSource]
    seq_len: int = bounded(2048, ge=1)
    seed: int = bounded(0, ge=0)
    shards_root: str = "data/shards"
    data_root: str = "."  # base of relative raw `files`
    synth: SynthSection | None = None
    description: str = ""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source name(s): {', '.join(dupes)}")
        if not any(s.weight > 0 for s in self.sources):
            raise ValueError("a mixture needs at least one source with a positive weight")

    @property
    def active(self) -> list[MixSource]:
        return [s for s in self.sources if s.weight > 0]

    def shard_dir(self, source: MixSource, base: str | os.PathLike | None = None) -> Path:
        """Tokenized shards of `source`; relative paths resolve against `base` (the recipe's folder)."""
        path = Path(source.path) if source.path else Path(self.shards_root) / source.name
        return path if path.is_absolute() or base is None else Path(base) / path

    def normalized_weights(self) -> dict[str, float]:
        total = sum(s.weight for s in self.active)
        return {s.name: s.weight / total for s in self.active}


def source_spec(source: MixSource, data_root: str | os.PathLike = ".") -> SourceSpec:
    """The raw-data description of a mixture source (relative files under `data_root`)."""
    from .sources import SourceSpec

    root = Path(data_root)
    files = [f if Path(f).is_absolute() or source.format == "hf" else str(root / f) for f in source.files]
    return SourceSpec(
        name=source.name,
        path=files,
        format=source.format,
        text_field=source.text_field,
        template=source.template,
        on_error=source.on_error,
    )


def prepare(recipe: MixtureRecipe, tokenizer: Tokenizer, workers: int = 2) -> list[dict]:
    """Make what the recipe needs and is missing: the synthetic corpus, then the shards of
    every active source that lists raw files. Returns the tokenization reports."""
    from .shards import tokenize_source

    if recipe.synth is not None and not (Path(recipe.synth.out) / "manifest.json").exists():
        from .synth import SynthConfig, generate

        generate(SynthConfig(seed=recipe.synth.seed).scaled(recipe.synth.scale), Path(recipe.synth.out))
    reports = []
    for source in recipe.active:
        if source.files and not (recipe.shard_dir(source) / "meta.json").exists():
            spec = source_spec(source, recipe.data_root)
            reports.append(tokenize_source(spec, recipe.shards_root, tokenizer=tokenizer, workers=workers))
    check_tokenizer(recipe, tokenizer)
    return reports


def check_tokenizer(recipe: MixtureRecipe, tokenizer: Tokenizer) -> None:
    """ValueError naming the first active source whose shards another tokenizer made (their ids
    would mean other tokens to this model, or fall outside its vocabulary)."""
    from .shards import META_FILE, tokenizer_fingerprint

    want = tokenizer_fingerprint(tokenizer)
    for source in recipe.active:
        meta = recipe.shard_dir(source) / META_FILE
        if not meta.is_file():
            continue
        made = json.loads(meta.read_text(encoding="utf-8")).get("tokenizer") or {}
        if made.get("fingerprint", want) != want:
            raise ValueError(
                f"{meta}: source {source.name!r} was tokenized with {made.get('name')!r} "
                f"(fingerprint {str(made.get('fingerprint'))[:12]}), not with this model's tokenizer "
                f"{tokenizer.name_or_path!r} ({want[:12]}); re-tokenize it with "
                "`mobilellm-r1 data tokenize --tokenizer MODEL_DIR --overwrite`"
            )


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path, or a name shipped in the package (`data/pretrain_phase1`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = resources.files(RECIPE_PACKAGE) / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(f"recipe not found: {name_or_path} (neither a file nor a shipped recipe)")


def load_mixture(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> MixtureRecipe:
    """Read and check a mixture recipe (`overrides`: `key=value`, e.g. `seq_len=4096`)."""
    return load_config(MixtureRecipe, recipe_path(name_or_path), overrides)


def build_loader(
    recipe: MixtureRecipe,
    *,
    batch_size: int,
    eos_id: int,
    rank: int = 0,
    world_size: int = 1,
    base_dir: str | os.PathLike | None = None,
    sources: dict[str, TokenSource] | None = None,
) -> MixtureLoader:
    """A `MixtureLoader` over the recipe's tokenized shards (or over the given `sources`)."""
    if sources is None:
        sources = {}
        for s in recipe.active:
            directory = recipe.shard_dir(s, base_dir)
            if not directory.exists():
                raise FileNotFoundError(
                    f"recipe {recipe.name!r}: no tokenized shards for source {s.name!r} at {directory}; "
                    "run `mobilellm-r1 data tokenize --recipe ...` first"
                )
            from .shards import ShardedSource

            sources[s.name] = ShardedSource(directory)
    weights = recipe.normalized_weights()
    return MixtureLoader(
        {n: sources[n] for n in weights},
        weights,
        seq_len=recipe.seq_len,
        batch_size=batch_size,
        eos_id=eos_id,
        seed=recipe.seed,
        rank=rank,
        world_size=world_size,
    )
