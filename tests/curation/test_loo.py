"""`curate loo`: derived recipes, the no-repeat check, Eq. 1, and an end-to-end run with resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import TINY_MODEL_SET
from mobilellm_r1.cli import main
from mobilellm_r1.curation.loo import (
    LOOConfig,
    check_no_repeats,
    derived_recipe,
    group_impact,
    heatmap_png,
    markdown_table,
    max_steps_without_repeats,
    plan_runs,
)
from mobilellm_r1.data.recipes import MixSource, MixtureRecipe

SMALL_TRAIN = [
    TINY_MODEL_SET,
    "steps=2",
    "data.micro_batch=2",
    "optim.warmup_steps=1",
    "loss_chunk_tokens=128",
    "eval_every=0",
    "checkpoint_every=0",
    "log_every=1",
    "precision=fp32",
]
TEXTS = {
    "code": "def add_{i}(x):\n    return x + {i}\n",
    "math": "Question: what is {i} plus {i}? Answer: {i} + {i} = {j}.",
    "knowledge": "The river number {i} flows into lake {j} near the old town.",
}


def _mixture() -> MixtureRecipe:
    sources = [
        MixSource("a", 40.0),
        MixSource("b", 30.0),
        MixSource("c", 30.0),
        MixSource("off", 0.0),
    ]
    return MixtureRecipe(name="m", sources=sources, seq_len=8)


def test_derived_recipes_have_equal_weights_and_leave_one_out() -> None:
    mixture = _mixture()
    runs = plan_runs(mixture)
    assert [r.name for r in runs] == ["all", "without_a", "without_b", "without_c"]
    for run in runs:
        recipe = derived_recipe(mixture, run)
        names = [s.name for s in recipe.sources]
        assert names == list(run.sources) and "off" not in names
        assert run.excluded not in names
        assert {s.weight for s in recipe.sources} == {1.0}
        assert set(recipe.normalized_weights().values()) == {1 / len(names)}
        assert recipe.seq_len == 8 and recipe.shards_root == mixture.shards_root
    assert [r.excluded for r in plan_runs(mixture, ["b"])] == [None, "b"]
    with pytest.raises(ValueError, match="off"):
        plan_runs(mixture, ["off"])  # weight 0: not an active source
    with pytest.raises(ValueError, match=">= 2 active sources"):
        plan_runs(MixtureRecipe(name="one", sources=[MixSource("a", 1.0)]))


def test_no_repeat_check_names_the_source() -> None:
    runs = plan_runs(_mixture())
    seq_len, batch = 8, 4  # a sample reads 9 tokens
    # 10 steps x 4 = 40 samples; runs with 2 sources read ceil(40 / 2) = 20 samples = 180 tokens
    slots = {"a": 1000, "b": 180, "c": 179}
    with pytest.raises(ValueError, match=r"source 'c' holds 179 tokens .* reads 180 .*<= 9"):
        check_no_repeats(slots, runs, steps=10, global_batch=batch, seq_len=seq_len)
    assert (
        max_steps_without_repeats(slots, runs, batch, seq_len) == 9
    )  # 2 sources x floor(179 / 9) samples // 4
    check_no_repeats(slots, runs, steps=9, global_batch=batch, seq_len=seq_len)
    check_no_repeats({"a": 180, "b": 180, "c": 180}, runs, steps=10, global_batch=batch, seq_len=seq_len)


def test_eq1_arithmetic_table_and_heatmap() -> None:
    reference = {"code": 2.0, "math": 3.0}
    without = {"a": {"code": 2.5, "math": 2.75}, "b": {"code": 1.5, "math": 3.0}}
    delta = group_impact(reference, without)
    assert delta == {"a": {"code": 0.5, "math": -0.25}, "b": {"code": -0.5, "math": 0.0}}
    table = markdown_table(reference, delta)
    assert "| a | +0.5000 | -0.2500 |" in table and "| b | -0.5000 | +0.0000 |" in table
    assert "2.0000 | 3.0000" in table
    png = heatmap_png(delta, ["code", "math"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert heatmap_png({"a": {"code": 0.0}}, ["code"])[:4] == b"\x89PNG"  # all zero: still centred


def _write_jsonl(path: Path, texts: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture
def loo_config(tmp_path) -> Path:
    """Three raw sources, a recipe tokenizing them into tmp shards, three probing sets, a LOO config."""
    sources, probes = [], {}
    for name, template in TEXTS.items():
        docs = [template.format(i=i, j=2 * i) for i in range(12)]
        file = _write_jsonl(tmp_path / "raw" / f"{name}.jsonl", docs)
        sources.append({"name": name, "weight": 1 + len(sources), "files": [file]})
        probes[name] = _write_jsonl(tmp_path / "probe" / f"{name}.jsonl", docs[-6:])
    recipe = {"name": "three", "seq_len": 16, "shards_root": str(tmp_path / "shards"), "sources": sources}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(recipe))
    config = LOOConfig(
        probes=probes,
        out=str(tmp_path / "loo"),
        train_overrides=SMALL_TRAIN,
        mixture=str(tmp_path / "mix.yaml"),
        eval_docs=4,
    )
    path = tmp_path / "loo.yaml"
    path.write_text(yaml.safe_dump(config.__dict__, sort_keys=False))
    return path


def _loo(config: Path, capsys, *extra: str, progress: str | None = None) -> dict:
    """The command's stdout JSON report; ``progress``: text its stderr progress display must show."""
    assert main(["curate", "loo", "--config", str(config), "--device", "cpu", *extra]) == 0
    captured = capsys.readouterr()
    assert progress is None or progress in captured.err, captured.err
    return json.loads(captured.out)


def test_cli_end_to_end_resume_and_errors(loo_config, tmp_path, capsys) -> None:
    out = tmp_path / "loo"
    report = _loo(loo_config, capsys, progress="loo: train without math")
    assert report["runs"] == 4 and report["skipped"] == [] and report["steps"] == 2
    assert report["tokens_per_run"] == 2 * 2 * 16
    table = json.loads((out / "loo.json").read_text())
    assert table["capabilities"] == ["code", "math", "knowledge"]
    runs = table["runs"]
    assert set(runs) == {"all", "without_code", "without_math", "without_knowledge"}
    for source in TEXTS:
        run = runs[f"without_{source}"]
        assert run["excluded"] == source and source not in run["sources"] and len(run["sources"]) == 2
        recipe = yaml.safe_load((out / "runs" / f"without_{source}" / "mixture.yaml").read_text())
        assert [s["weight"] for s in recipe["sources"]] == [1.0, 1.0]
        for cap in TEXTS:  # Eq. 1 from the stored per-run NLLs
            expected = run["nll"][cap] - runs["all"]["nll"][cap]
            assert table["delta"][source][cap] == pytest.approx(expected)
            assert 0 < run["nll"][cap] < 20
    assert table["delta"] == report["delta"]
    assert (out / "loo_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "| without" not in (out / "loo.md").read_text() and "| math |" in (out / "loo.md").read_text()
    assert (out / "runs/all/final/model.safetensors").exists()

    # resume: everything finished is skipped; a run missing only its result is scored, not retrained
    assert _loo(loo_config, capsys)["skipped"] == list(runs)
    final = out / "runs/without_math/final/model.safetensors"
    stamp = final.stat().st_mtime_ns
    (out / "runs/without_math/result.json").unlink()
    again = _loo(loo_config, capsys)
    assert again["skipped"] == ["all", "without_code", "without_knowledge"]
    assert again["delta"] == report["delta"] and final.stat().st_mtime_ns == stamp

    # other settings in the same out dir are refused; too many steps name the repeated source
    assert main(["curate", "loo", "--config", str(loo_config), "--set", "eval_docs=3"]) == 1
    assert "written with other settings" in capsys.readouterr().err
    steps = ["--set", "train_overrides.1=steps=200", "--set", "train_overrides.2=data.micro_batch=16"]
    steps += ["--out", str(tmp_path / "x")]
    assert main(["curate", "loo", "--config", str(loo_config), *steps]) == 1
    assert "would repeat" in capsys.readouterr().err
    capped = _loo(loo_config, capsys, *steps, "--set", "cap_steps=true", "--set", "exclude=[code]")
    assert capped["runs"] == 2 and 1 <= capped["steps"] < 200
    settings = json.loads((tmp_path / "x" / "loo.json").read_text())["settings"]
    assert settings["steps_requested"] == 200 and settings["global_batch"] == 16
    need = -(-capped["steps"] * 16 // 2) * 17  # ceil(steps x batch / 2 sources) samples of 17 tokens
    assert min(settings["source_tokens"][s] for s in ("math", "knowledge")) >= need
