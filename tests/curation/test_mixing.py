"""Eq. 5 source weights: arithmetic by hand, the rho floor, the epoch cap, and `curate mix` recipes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mobilellm_r1.cli import main
from mobilellm_r1.curation.mixing import (
    balanced_joint,
    cap_epochs,
    check_sources,
    source_stats,
    source_weights,
)
from mobilellm_r1.data.recipes import load_mixture

# (source, I(x), len(x)): rho_a = (1*10 + 3*20)/2 = 35, rho_b = (-2*10 + 0.5*4)/2 = -9, rho_c = 0.25*40 = 10
ROWS = [("a", 1.0, 10), ("a", 3.0, 20), ("b", -2.0, 10), ("b", 0.5, 4)] + [("c", 0.25, 40)] * 4


def scores_table(rows=ROWS) -> pa.Table:
    return pa.table(
        {
            "id": [f"x{i}" for i in range(len(rows))],
            "source": [r[0] for r in rows],
            "tokens": pa.array([r[2] for r in rows], pa.int64()),
            "math@t1": [r[1] * 2 for r in rows],
            "joint": [r[1] for r in rows],
        }
    )


def test_eq5_rho_floor_and_normalisation() -> None:
    stats = source_stats(scores_table())
    assert {g: (s.samples, s.tokens, s.rho) for g, s in stats.items()} == {
        "a": (2, 30, 35.0),
        "b": (2, 14, -9.0),
        "c": (4, 160, 10.0),
    }
    mix = source_weights(scores_table(), floor=0.1)  # b's negative rho is lifted to 0.1 * 35
    assert mix.clipped_rho == {"a": 35.0, "b": 3.5, "c": 10.0}
    assert mix.weights == pytest.approx({"a": 35 / 48.5, "b": 3.5 / 48.5, "c": 10 / 48.5})
    assert sum(mix.weights.values()) == pytest.approx(1.0)
    dropped = source_weights(scores_table(), floor=0.0)  # floor 0: a harmful source gets nothing
    assert dropped.weights == pytest.approx({"a": 35 / 45, "b": 0.0, "c": 10 / 45})
    other = source_weights(scores_table(), column="math@t1", floor=0.1)  # any score column; scale-free
    assert other.weights == pytest.approx(mix.weights)
    with pytest.raises(ValueError, match="no source has positive rho"):
        source_weights(scores_table([("a", -1.0, 5), ("b", -0.5, 5)]))
    with pytest.raises(ValueError, match="missing column"):
        source_weights(scores_table(), column="code@t1")
    with pytest.raises(ValueError, match="floor must lie in"):
        source_weights(scores_table(), floor=1.5)


def test_epoch_cap_redistributes_iteratively() -> None:
    # caps = max_epochs * tokens / budget = a 0.1, b 0.15, c 1.0.  Round 1 caps a and hands 0.5 to b and c
    # in proportion (b 0.675, c 0.225); round 2 caps b and gives the rest to c.
    weights, capped = cap_epochs({"a": 0.6, "b": 0.3, "c": 0.1}, {"a": 100, "b": 150, "c": 1000}, 1000, 1.0)
    assert weights == pytest.approx({"a": 0.1, "b": 0.15, "c": 0.75}) and capped == ["a", "b"]
    # too small: the message names the largest budget and the smallest epoch count that work, and both do
    with pytest.raises(
        ValueError, match=r"give 250 tokens.*--token-budget 250 or less.*--max-epochs 4 or more"
    ):
        cap_epochs({"a": 0.5, "b": 0.5}, {"a": 100, "b": 150}, 1000, 1.0)
    assert cap_epochs({"a": 0.5, "b": 0.5}, {"a": 100, "b": 150}, 250, 1.0)[0] == pytest.approx(
        {"a": 0.4, "b": 0.6}
    )
    assert sum(
        cap_epochs({"a": 0.5, "b": 0.5}, {"a": 100, "b": 150}, 1000, 4.0)[0].values()
    ) == pytest.approx(1)
    # a zero-weight source takes none of the excess: only a's 100 tokens count, and a floor is suggested
    zero = r"weight > 0 \(a\).*--token-budget 100 or less.*--max-epochs 10 or more.*--floor > 0 so that b"
    with pytest.raises(ValueError, match=zero):
        cap_epochs({"a": 1.0, "b": 0.0}, {"a": 100, "b": 1000}, 1000, 1.0)
    assert cap_epochs({"a": 1.0, "b": 0.0}, {"a": 100, "b": 1000}, 1000, 10.0)[0] == {"a": 1.0, "b": 0.0}
    # Through Eq. 5 with the scored tokens: caps a 0.6, b 0.28, c 3.2; a (0.72) is capped.
    mix = source_weights(scores_table(), floor=0.1, max_epochs=2, token_budget=100)
    rest = 0.4 / 13.5
    assert mix.weights == pytest.approx({"a": 0.6, "b": 3.5 * rest, "c": 10 * rest})
    assert mix.capped == ["a"] and mix.epochs["a"] == pytest.approx(2.0)
    assert all(e <= 2 + 1e-9 for e in mix.epochs.values()) and sum(mix.weights.values()) == pytest.approx(1)
    with pytest.raises(ValueError, match="needs both"):
        source_weights(scores_table(), max_epochs=2)


def write_base(path: Path, names: list[str]) -> Path:
    lines = [
        "name: base",
        "seq_len: 128",
        "seed: 3",
        f"shards_root: {path.parent / 'shards'}",
        "sources:",
        *[f"  - {{name: {n}, weight: 1, files: [raw/{n}.jsonl], text_field: body}}" for n in names],
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curate_mix_writes_a_loadable_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scores = tmp_path / "influence.parquet"
    pq.write_table(scores_table(), scores)
    base = write_base(tmp_path / "base.yaml", ["c", "a", "b"])
    # a's tokenized shards hold 1,000 tokens: the cap reads them (b and c fall back to the scored tokens)
    (tmp_path / "shards" / "a").mkdir(parents=True)
    (tmp_path / "shards" / "a" / "meta.json").write_text(json.dumps({"totals": {"tokens": 1000}}))
    out = tmp_path / "mix.yaml"
    args = ["curate", "mix", "--scores", str(scores), "--recipe", str(base), "--out", str(out)]
    assert main([*args, "--floor", "0.1", "--max-epochs", "2", "--token-budget", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens_from"] == {"a": "shards", "b": "scores", "c": "scores"} and report["capped"] == []
    recipe = load_mixture(out)
    assert recipe.name == "base_eq5" and (recipe.seq_len, recipe.seed) == (128, 3)
    assert [s.name for s in recipe.sources] == ["c", "a", "b"]  # the base's order and definitions
    assert all(s.files == [f"raw/{s.name}.jsonl"] and s.text_field == "body" for s in recipe.sources)
    expected = {"a": 35 / 48.5, "b": 3.5 / 48.5, "c": 10 / 48.5}
    assert {s.name: s.weight for s in recipe.sources} == pytest.approx(expected)
    assert recipe.normalized_weights() == pytest.approx(expected)
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert any("floor 0.1" in line for line in header) and any(
        line.split()[1:3] == ["b", "2"] for line in header
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_curate_mix_names_missing_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scores = tmp_path / "influence.parquet"
    pq.write_table(scores_table(), scores)
    base = write_base(tmp_path / "base.yaml", ["a", "b", "d"])
    out = tmp_path / "mix.yaml"
    assert main(["curate", "mix", "--scores", str(scores), "--recipe", str(base), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "recipe sources without scores ['d']" in err and "not in the recipe ['c']" in err
    assert not out.exists()


def test_synthetic_noisy_recipe_matches_the_probe_sets_sources() -> None:
    """Scores of the shipped probe-sets config's representative subsets map onto data/synthetic_noisy."""
    from mobilellm_r1.curation.probe_sets import load_probe_config

    recipe = load_mixture("data/synthetic_noisy")
    names = [s.name for s in load_probe_config("curation/probe_sets_synthetic").sources]
    check_sources(recipe, names)
    assert recipe.normalized_weights() == pytest.approx(dict.fromkeys(names, 1 / len(names)))


def test_balanced_column_scales_each_capability_to_unit_std(tmp_path: Path) -> None:
    """A capability whose scores are 100x larger no longer decides the joint score."""
    code = np.array([100.0, -100.0, 300.0, -300.0])  # large gradients: favours sample 2
    math = np.array([-1.0, 3.0, -1.0, 1.0])  # small gradients: favours sample 1
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "source": ["s1", "s1", "s2", "s2"],
            "tokens": pa.array([10, 10, 10, 10], pa.int64()),
            "code@t1": code,
            "math@t1": math,
            "joint": 0.5 * code + 0.5 * math,
        }
    )
    weights = {"code@t1": 0.5, "math@t1": 0.5}
    got = balanced_joint(table, weights)
    np.testing.assert_allclose(got, code / code.std() + math / math.std())
    pq.write_table(table, tmp_path / "influence.parquet")
    (tmp_path / "meta.json").write_text(json.dumps({"weights": weights}))
    stats = source_stats(tmp_path / "influence.parquet", "balanced")
    assert stats["s1"].rho == pytest.approx(10 * got[:2].mean())
    assert stats["s2"].rho == pytest.approx(10 * got[2:].mean())
    (tmp_path / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta\.json"):
        source_stats(tmp_path / "influence.parquet", "balanced")
