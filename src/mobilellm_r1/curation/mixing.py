"""Influence-weighted source mixing (MobileLLM-R1 Eq. 5) and the data recipe it writes.

Eq. 5 scores a source g by the token-weighted mean influence of its scored samples and normalises::

    rho_g = (1 / N_g) * sum_{x in g} I(x) * len(x)        w_g = rho_g / sum_g' rho_g'

``I`` is a column of an ``influence.parquet`` (:mod:`.influence_run`; default ``joint``, Eq. 3-4) and
``len(x)`` its ``tokens`` column (tokens scored, BOS included, truncated at the scorer's ``seq_len``).

Negative rho.  A source whose samples on average raise the probe losses has rho_g <= 0, which Eq. 5 cannot
turn into a weight.  Every rho is clipped from below to ``floor * max_g rho_g``: a harmful (or barely
useful) source keeps a small share instead of vanishing, which keeps the mixture diverse; ``floor=0``
drops sources with rho_g <= 0 altogether.  At least one source needs rho_g > 0.

Epoch cap.  With a training budget of T tokens and D_g tokens in source g, weight w_g means
``w_g * T / D_g`` passes over g.  Given ``max_epochs``, weights above ``max_epochs * D_g / T`` are set to
that cap and the excess goes to the uncapped sources in proportion to their weights, repeatedly until
no source exceeds its cap (an error when the caps cannot add up to 1).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..atomic import atomic_write
from ..data.recipes import MixtureRecipe, load_mixture
from ..typed_config import to_dict

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SourceStats:
    """One source of the scores: N_g samples, their tokens, and rho_g of Eq. 5 (before clipping)."""

    samples: int
    tokens: int
    rho: float


@dataclass
class Mix:
    """Eq. 5 weights with what produced them (``epochs``: passes each weight implies, when capped)."""

    weights: dict[str, float]
    stats: dict[str, SourceStats]
    clipped_rho: dict[str, float]
    settings: dict[str, Any]
    capped: list[str]
    epochs: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "rho": {g: s.rho for g, s in self.stats.items()},
            "clipped_rho": self.clipped_rho,
            "samples": {g: s.samples for g, s in self.stats.items()},
            "tokens": {g: s.tokens for g, s in self.stats.items()},
            "capped": self.capped,
            "epochs": self.epochs,
            "settings": self.settings,
        }


def _table(scores: pa.Table | PathLike) -> tuple[pa.Table, str]:
    if isinstance(scores, pa.Table):
        return scores, "scores"
    path = Path(scores)
    if not path.exists():
        raise FileNotFoundError(f"scores not found: {path}")
    return pq.read_table(path), str(path)


def balanced_joint(table: pa.Table, weights: Mapping[str, float]) -> np.ndarray:
    """Eq. 3-4 with every capability's term scaled to unit standard deviation over the samples:
    ``sum_c J_c / std(J_c)``, ``J_c = sum_t alpha_{c,t} I(x; theta_{c,t})``.  Not in the paper: its
    unnormalised sum lets the capability whose probe gradients are largest decide the joint score.
    ``weights``: ``{"<capability>@<checkpoint>": alpha}`` (the ``weights`` of the run's meta.json)."""
    per_capability: dict[str, np.ndarray] = {}
    for key, alpha in weights.items():
        capability = key.split("@", 1)[0]
        values = table.column(key).to_numpy(zero_copy_only=False).astype(np.float64)
        per_capability[capability] = per_capability.get(capability, 0.0) + alpha * values
    total = np.zeros(table.num_rows)
    for capability, values in per_capability.items():
        std = values.std()
        if std == 0:
            raise ValueError(f"capability {capability!r}: its scores have zero spread; cannot balance")
        total += values / std
    return total


def _with_balanced(table: pa.Table, where: str) -> pa.Table:
    """Add the ``balanced`` column from the weights in the meta.json beside the scores file."""
    meta = Path(where).parent / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(f"column 'balanced' needs the run's {meta} (the Eq. 4 weights)")
    weights = json.loads(meta.read_text())["weights"]
    return table.append_column("balanced", pa.array(balanced_joint(table, weights), pa.float64()))


def source_stats(scores: pa.Table | PathLike, column: str = "joint") -> dict[str, SourceStats]:
    """N_g, token count and rho_g (Eq. 5) of every source in an influence table (sorted by name).
    ``column="balanced"`` on an ``influence.parquet`` path uses :func:`balanced_joint`."""
    table, where = _table(scores)
    if column == "balanced" and column not in table.column_names:
        table = _with_balanced(table, where)
    missing = [c for c in ("source", "tokens", column) if c not in table.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; has {table.column_names}")
    sources = table.column("source").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else list(range(len(sources)))
    if None in sources:
        i = sources.index(None)
        raise ValueError(f"{where}: row {i} (id {ids[i]!r}) has no source; Eq. 5 needs every sample's source")
    values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(values).all():
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"{where}: row {i} (id {ids[i]!r}): {column} is {values[i]}")
    tokens = table.column("tokens").to_numpy(zero_copy_only=False).astype(np.float64)
    names, inverse = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    token_sums = np.bincount(inverse, weights=tokens, minlength=len(names))
    mass = np.bincount(inverse, weights=values * tokens, minlength=len(names))
    return {
        str(g): SourceStats(int(n), int(t), float(m / n))
        for g, n, t, m in zip(names, counts, token_sums, mass, strict=True)
    }


def clip_rho(rho: Mapping[str, float], floor: float) -> dict[str, float]:
    """rho_g clipped from below to ``floor * max rho`` (see the module docstring)."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must lie in [0, 1), got {floor}")
    top = max(rho.values(), default=0.0)
    if top <= 0:
        raise ValueError(f"no source has positive rho (Eq. 5), nothing to mix: {dict(rho)}")
    return {g: max(r, floor * top, 0.0) for g, r in rho.items()}


def cap_epochs(
    weights: Mapping[str, float], source_tokens: Mapping[str, float], token_budget: float, max_epochs: float
) -> tuple[dict[str, float], list[str]]:
    """Weights with no source above ``max_epochs`` passes over ``token_budget`` tokens (module docstring);
    returns (weights, the capped sources)."""
    if token_budget <= 0 or max_epochs <= 0:
        raise ValueError(f"token_budget and max_epochs must be > 0, got {token_budget}, {max_epochs}")
    missing = sorted(set(weights) - set(source_tokens))
    if missing:
        raise ValueError(f"no token count for source(s) {missing}")
    caps = {g: max_epochs * source_tokens[g] / token_budget for g in weights}
    positive = [g for g, w in weights.items() if w > 0]  # the others never receive mass
    if sum(caps[g] for g in positive) < 1 - 1e-12:
        raise ValueError(_budget_advice(weights, source_tokens, token_budget, max_epochs))
    out, fixed = dict(weights), set()
    while over := [g for g in out if g not in fixed and out[g] > caps[g] * (1 + 1e-12)]:
        fixed.update(over)
        for g in over:
            out[g] = caps[g]
        free = [g for g in out if g not in fixed]
        mass = sum(out[g] for g in free)
        rest = 1.0 - sum(out[g] for g in fixed)
        for g in free:  # mass > 0: the check above keeps some room among the sources with weight
            out[g] *= rest / mass
    return out, sorted(fixed)


def _budget_advice(
    weights: Mapping[str, float], source_tokens: Mapping[str, float], token_budget: float, max_epochs: float
) -> str:
    """Why the epoch cap cannot be met, and the largest budget / smallest epoch count that would work."""
    positive = [g for g, w in weights.items() if w > 0]
    zero = [g for g in weights if g not in positive]
    room = sum(source_tokens[g] for g in positive)
    text = (
        f"the epoch cap cannot be met: {max_epochs:g} epoch(s) of the {room:,.0f} tokens of the sources "
        f"with weight > 0 ({', '.join(positive)}) give {max_epochs * room:,.0f} tokens, less than the "
        f"token budget of {token_budget:,.0f}. Use --token-budget {math.floor(max_epochs * room):.0f} or less "
        f"(at --max-epochs {max_epochs:g}), or --max-epochs {math.ceil(100 * token_budget / room) / 100:g} "
        f"or more (at --token-budget {token_budget:g})"
    )
    if zero:
        text += f", or a --floor > 0 so that {', '.join(zero)} get a share"
    return text


def eq5_weights(
    stats: Mapping[str, SourceStats],
    column: str = "joint",
    floor: float = 0.01,
    *,
    max_epochs: float | None = None,
    token_budget: float | None = None,
    source_tokens: Mapping[str, float] | None = None,
) -> Mix:
    """Eq. 5 weights from per-source statistics (see :func:`source_weights`)."""
    clipped = clip_rho({g: s.rho for g, s in stats.items()}, floor)
    total = sum(clipped.values())
    weights = {g: r / total for g, r in clipped.items()}
    settings: dict[str, Any] = {"column": column, "floor": floor}
    capped: list[str] = []
    epochs = None
    if (max_epochs is None) != (token_budget is None):
        raise ValueError("the epoch cap needs both max_epochs and token_budget")
    if max_epochs is not None and token_budget is not None:
        tokens = dict(source_tokens) if source_tokens is not None else {g: s.tokens for g, s in stats.items()}
        weights, capped = cap_epochs(weights, tokens, token_budget, max_epochs)
        epochs = {g: w * token_budget / tokens[g] if tokens[g] else 0.0 for g, w in weights.items()}
        settings.update(max_epochs=max_epochs, token_budget=token_budget, source_tokens=tokens)
    return Mix(weights, dict(stats), clipped, settings, capped, epochs)


def source_weights(
    scores: pa.Table | PathLike,
    column: str = "joint",
    floor: float = 0.01,
    *,
    max_epochs: float | None = None,
    token_budget: float | None = None,
    source_tokens: Mapping[str, float] | None = None,
) -> Mix:
    """Eq. 5 weights of the sources in ``scores`` (a table or an ``influence.parquet``), with negative rho
    clipped at ``floor`` and, when ``max_epochs`` and ``token_budget`` are given, the epoch cap over
    ``source_tokens`` (default: the tokens of each source's scored samples).  The weights sum to 1."""
    return eq5_weights(
        source_stats(scores, column),
        column,
        floor,
        max_epochs=max_epochs,
        token_budget=token_budget,
        source_tokens=source_tokens,
    )


def check_sources(recipe: MixtureRecipe, names: Iterable[str]) -> None:
    """Raise unless the scored source ``names`` are exactly the recipe's sources (naming the strays)."""
    have, names = {s.name for s in recipe.sources}, set(names)
    missing, unknown = sorted(have - names), sorted(names - have)
    if missing or unknown:
        raise ValueError(
            f"scores and recipe {recipe.name!r} disagree on sources: recipe sources without scores "
            f"{missing}, scored sources not in the recipe {unknown}"
        )


def mixed_recipe(base: MixtureRecipe, weights: Mapping[str, float], name: str | None = None) -> MixtureRecipe:
    """``base`` with every source's weight replaced; ``weights`` must name exactly the base's sources."""
    check_sources(base, weights)
    sources = [replace(s, weight=float(weights[s.name])) for s in base.sources]
    return replace(base, name=name or f"{base.name}_eq5", sources=sources)


def write_recipe(recipe: MixtureRecipe, path: PathLike, header: str = "") -> Path:
    """Write ``recipe`` as YAML that :func:`~mobilellm_r1.data.recipes.load_mixture` reads, after a
    ``#`` comment ``header`` (atomically)."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True, width=100)
    atomic_write(path, comment + body)
    return Path(path)


def mix_header(mix: Mix, origin: str) -> str:
    """The recipe comment: where the weights come from, the settings, and a per-source table."""
    s = mix.settings
    lines = [
        f"Eq. 5 source weights (MobileLLM-R1) from {origin}, column {s['column']!r}.",
        "rho_g = mean over the source's scored samples of I(x) * len(x); w_g = rho_g / sum rho.",
        f"floor {s['floor']:g}: rho clipped from below to floor * max rho (0: drop rho <= 0).",
    ]
    if mix.epochs is not None:
        lines.append(
            f"epoch cap: at most {s['max_epochs']:g} passes per source over {s['token_budget']:g} tokens; "
            f"capped: {', '.join(mix.capped) or 'none'}."
        )
    lines.append(f"{'source':<24}{'N_g':>10}{'tokens':>14}{'rho':>14}{'clipped':>14}{'weight':>10}")
    for g, st in mix.stats.items():
        lines.append(
            f"{g:<24}{st.samples:>10}{st.tokens:>14}{st.rho:>14.4g}{mix.clipped_rho[g]:>14.4g}"
            f"{mix.weights[g]:>10.4f}"
        )
    return "\n".join(lines)


def _source_tokens(recipe: MixtureRecipe, stats: Mapping[str, SourceStats]) -> tuple[dict, dict]:
    """Each source's token count: its tokenized shards' ``meta.json`` when present, else the scored
    tokens; returns (tokens, where each count came from)."""
    tokens, origin = {}, {}
    for source in recipe.sources:
        meta = recipe.shard_dir(source) / "meta.json"
        if meta.exists():
            tokens[source.name] = float(json.loads(meta.read_text())["totals"]["tokens"])
            origin[source.name] = "shards"
        else:
            tokens[source.name] = float(stats[source.name].tokens)
            origin[source.name] = "scores"
    return tokens, origin


def run_mix(
    scores: PathLike,
    recipe: PathLike,
    out: PathLike,
    *,
    column: str = "joint",
    floor: float = 0.01,
    max_epochs: float | None = None,
    token_budget: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """``curate mix``: Eq. 5 weights from ``scores`` written into a copy of the data ``recipe`` at
    ``out``.  The epoch cap counts each source's tokens from its shards when tokenized, else from the
    scored samples.  Returns the report."""
    base = load_mixture(recipe)
    stats = source_stats(scores, column)
    check_sources(base, stats)
    tokens, origin = _source_tokens(base, stats) if max_epochs is not None else (None, None)
    mix = eq5_weights(
        stats, column, floor, max_epochs=max_epochs, token_budget=token_budget, source_tokens=tokens
    )
    new = mixed_recipe(base, mix.weights, name)
    path = write_recipe(new, out, mix_header(mix, f"{scores} over base recipe {recipe}"))
    return {"recipe": str(path), "name": new.name, **mix.as_dict(), "tokens_from": origin}
