"""e2e recipes: shipped ones load; bad stages and overrides fail with one clear message."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from mobilellm_r1.pipeline.config import load_pipeline, stage_argv
from mobilellm_r1.typed_config import ConfigError

SHIPPED = sorted(
    f"e2e/{p.name.removesuffix('.yaml')}"
    for p in resources.files("mobilellm_r1.recipes").joinpath("e2e").iterdir()
    if p.name.endswith(".yaml")
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_load_and_name_known_commands() -> None:
    from mobilellm_r1.cli import COMMANDS

    assert "e2e/tiny_cpu" in SHIPPED
    for name in SHIPPED:
        cfg = load_pipeline(name)
        for stage in cfg.stages:
            assert stage_argv(stage, Path("/r"), cfg.name)[0] in COMMANDS, (name, stage.name)


def test_stage_overrides_append_to_the_stage_set(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nstages:\n  - {name: a, run: info --preset tiny, set: [x=1]}\n")
    cfg = load_pipeline(path, ["a.steps=80"], out_dir="elsewhere")
    assert cfg.stage("a").set == ["x=1", "steps=80"]
    assert stage_argv(cfg.stage("a"), Path("/r"), "t") == [
        "info",
        "--preset",
        "tiny",
        "--set",
        "x=1",
        "--set",
        "steps=80",
    ]
    assert cfg.run_dir == Path("elsewhere")


def test_placeholders_fill_root_and_name(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: t\nstages:\n  - {name: a, run: 'data tokenize --files {root}/x.jsonl --name {name}'}\n",
    )
    cfg = load_pipeline(path)
    assert stage_argv(cfg.stage("a"), Path("/home/u"), cfg.name)[3:] == ["/home/u/x.jsonl", "--name", "t"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\nstages:\n  - {name: A-1, run: info}\n", "stage name 'A-1'"),
        (
            "name: t\nstages:\n  - {name: a, run: info, outputs: [../x]}\n",
            "output '../x' must be a relative path",
        ),
        ("name: t\nstages:\n  - {name: a, run: info, outputs: [/tmp/x]}\n", "output '/tmp/x'"),
        ("name: t\nstages:\n  - {name: a, run: info}\n  - {name: a, run: info}\n", "stage 'a' appears twice"),
        ("name: t\nstages:\n  - {name: a, run: '  '}\n", "`run` is empty"),
        ("name: t\nstages:\n  - {name: a, run: info, colour: red}\n", "unknown field(s) colour"),
        ("name: t\nstages: []\n", "at least one stage"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises((ConfigError, ValueError)) as err:
        load_pipeline(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_bad_overrides_name_the_stage_or_the_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nstages:\n  - {name: a, run: info}\n")
    with pytest.raises(ValueError, match="no stage 'b' in recipe 't'; stages: a"):
        load_pipeline(path, ["b.steps=1"])
    with pytest.raises(ConfigError, match=r"expected STAGE\.KEY=VALUE"):
        load_pipeline(path, ["steps=1"])


@pytest.mark.parametrize("name", SHIPPED)
def test_training_stages_of_shipped_recipes_build_their_train_config(name: str) -> None:
    """Every `train` stage's recipe accepts the stage's --set items (field names and types)."""
    from mobilellm_r1.train.config import load_train_config

    cfg = load_pipeline(name)
    trained = 0
    for stage in cfg.stages:
        argv = stage_argv(stage, Path("/r"), cfg.name)
        if argv[0] != "train":
            continue
        recipe = argv[argv.index("--recipe") + 1]
        overrides = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
        train = load_train_config(recipe, overrides)
        assert train.out_dir == stage.outputs[0]
        trained += 1
    assert trained >= 4
