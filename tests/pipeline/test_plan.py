"""Stage keys and actions: what a re-run skips, resumes, re-runs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mobilellm_r1.pipeline.config import load_pipeline
from mobilellm_r1.pipeline.markers import Marker, write_marker
from mobilellm_r1.pipeline.plan import make_plan

RECIPE = """name: t
out_dir: run
stages:
  - {name: a, run: data synth --out a --scale 0.01, outputs: [a]}
  - {name: b, run: info --preset tiny, inputs: [a, '{root}/ext.txt'], outputs: [b]}
  - {name: c, run: info --preset tiny, inputs: [b], outputs: [c]}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "r.yaml").write_text(RECIPE)
    (tmp_path / "ext.txt").write_text("external data v1")
    return tmp_path


def _plan(root: Path, overrides: list[str] | None = None, **kw) -> dict:
    cfg = load_pipeline(root / "r.yaml", overrides)
    return {p.stage.name: p for p in make_plan(cfg, root, **kw)}


def _finish(root: Path, plan: dict, *names: str, state: str = "done") -> None:
    for name in names:
        write_marker(root / "run", name, Marker(plan[name].key, state, plan[name].argv))
        (root / "run" / plan[name].stage.outputs[0]).mkdir(parents=True, exist_ok=True)


def test_fresh_run_runs_everything_and_keys_are_stable(root: Path) -> None:
    first, second = _plan(root), _plan(root)
    assert [p.action for p in first.values()] == ["run", "run", "run"]
    assert {n: p.key for n, p in first.items()} == {n: p.key for n, p in second.items()}


def test_finished_stages_are_skipped_and_a_killed_one_resumes(root: Path) -> None:
    plan = _plan(root)
    _finish(root, plan, "a")
    _finish(root, plan, "b", state="running")
    again = _plan(root)
    assert [again[n].action for n in "abc"] == ["skip", "resume", "run"]


def test_a_missing_output_reruns_a_done_stage(root: Path) -> None:
    plan = _plan(root)
    _finish(root, plan, "a", "b")
    (root / "run" / "b").rmdir()
    assert _plan(root)["b"].action == "resume"


def test_a_changed_setting_reruns_that_stage_and_the_later_ones_only(root: Path) -> None:
    plan = _plan(root)
    _finish(root, plan, "a", "b", "c")
    changed = _plan(root, ["b.steps=3"])
    assert [changed[n].action for n in "abc"] == ["skip", "rerun", "rerun"]
    assert changed["a"].key == plan["a"].key
    assert changed["b"].key != plan["b"].key and changed["c"].key != plan["c"].key


def test_changed_external_input_reruns_its_stage(root: Path) -> None:
    plan = _plan(root)
    _finish(root, plan, "a", "b", "c")
    (root / "ext.txt").write_text("external data v2")
    changed = _plan(root)
    assert [changed[n].action for n in "abc"] == ["skip", "rerun", "rerun"]


def test_from_forces_that_stage_and_later_ones(root: Path) -> None:
    plan = _plan(root)
    _finish(root, plan, "a", "b", "c")
    forced = _plan(root, start="b")
    assert [forced[n].action for n in "abc"] == ["skip", "forced", "forced"]


def test_only_runs_one_stage_whose_inputs_exist(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"--only c: its inputs are missing in .*: b"):
        _plan(root, only="c")
    plan = _plan(root)
    _finish(root, plan, "a", "b")
    only = _plan(root, only="c")
    assert [only[n].action for n in "abc"] == ["unselected", "unselected", "forced"]
    assert only["c"].key == plan["c"].key


def test_unknown_stage_names_are_errors(root: Path) -> None:
    with pytest.raises(ValueError, match="no stage 'x'"):
        _plan(root, start="x")


def test_recipe_files_a_stage_names_are_part_of_its_key(tmp_path: Path) -> None:
    """Editing a run-local recipe the stage names (here through --set) re-runs that stage only."""
    (tmp_path / "r.yaml").write_text(
        "name: t\nout_dir: run\nstages:\n"
        "  - {name: a, run: info --preset tiny, outputs: [a]}\n"
        "  - {name: b, run: train --recipe train/tiny_cpu, set: [data.recipe=mix.yaml], outputs: [b]}\n"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mix.yaml").write_text("name: m\n")
    plan = _plan(tmp_path)
    _finish(tmp_path, plan, "a", "b")
    (tmp_path / "run" / "mix.yaml").write_text("name: m2\n")
    changed = _plan(tmp_path)
    assert [changed[n].action for n in "ab"] == ["skip", "rerun"]


def test_a_recipe_file_the_stage_writes_is_not_part_of_its_key(tmp_path: Path) -> None:
    """`curate mix --out mix/pretrain.yaml` names its own output like a recipe, and the training
    stage after it names that file: writing it must change neither key (else every re-run would
    redo both stages and all after them)."""
    (tmp_path / "r.yaml").write_text(
        "name: t\nout_dir: run\nstages:\n"
        "  - {name: m, run: curate mix --scores s.parquet --out mix/p.yaml, outputs: [mix/p.yaml]}\n"
        "  - {name: t, run: train --recipe train/tiny_cpu, set: [data.recipe=mix/p.yaml], "
        "inputs: [mix/p.yaml], outputs: [t]}\n"
    )
    before = _plan(tmp_path)
    (tmp_path / "run" / "mix").mkdir(parents=True)
    # what `curate mix` writes names the shipped recipe it mixed (which a scan would add to t's key)
    (tmp_path / "run" / "mix" / "p.yaml").write_text("# weights over data/synthetic_noisy\nname: m\n")
    for name in "mt":
        write_marker(tmp_path / "run", name, Marker(before[name].key, "done", before[name].argv))
    (tmp_path / "run" / "t").mkdir()
    after = _plan(tmp_path)  # the consumer's key counts m's key, not the file m wrote
    assert {n: (p.key, p.action) for n, p in after.items()} == {n: (before[n].key, "skip") for n in "mt"}


def test_a_stage_exit_is_told_in_words() -> None:
    from mobilellm_r1.pipeline.runner import exit_reason

    assert exit_reason(1) == "exit 1"
    assert exit_reason(-signal.SIGTERM) == "killed by SIGTERM"
    assert exit_reason(-signal.SIGKILL).startswith("killed by SIGKILL (the system's out-of-memory killer")
    assert "GGML_NATIVE=OFF" in exit_reason(-signal.SIGILL)
