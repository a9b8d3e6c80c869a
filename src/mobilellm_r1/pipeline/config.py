"""End-to-end recipes (`recipes/e2e/*.yaml`): the paper's stages in order, each one CLI command.

    name: tiny_cpu
    out_dir: runs/{name}
    stages:
      - name: pretrain_1
        title: Pretraining, phase 1
        run: train --recipe train/tiny_cpu
        set: [out_dir=pretrain_1, steps=40]     # each item becomes `--set ITEM`
        inputs: [data/shards/synthetic, mix/phase1.yaml]
        outputs: [pretrain_1]
        ranks: all                              # under torchrun: every rank (default: main only)

A stage's `run` is what a user would type after `mobilellm-r1`; the orchestrator runs it in the run
directory (`out_dir`), so every relative path in a stage (its arguments, `inputs`, `outputs`) is
inside the run. `{root}` in `run`, `set` and `inputs` is the directory `mobilellm-r1 run` started
in (for data outside the run, e.g. `{root}/../shared/data/corpora`); `{name}` is the recipe's name.
`outputs` must stay inside the run: they are what a re-run deletes when the stage's settings changed.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from ..data.recipes import recipe_path
from ..typed_config import ConfigError, build_config, read_yaml

STAGE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass
class StageSpec:
    """One stage: a `mobilellm-r1` command line with its inputs and outputs (run-relative paths)."""

    name: str
    run: str
    title: str = ""
    set: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    ranks: Literal["main", "all"] = "main"
    expected_s: float | None = None  # a measured wall time, shown as the stage's estimate

    def __post_init__(self) -> None:
        if not self.name or set(self.name) - STAGE_NAME_CHARS:
            raise ValueError(f"stage name {self.name!r}: use lowercase letters, digits and _")
        if not self.run.strip():
            raise ValueError(f"stage {self.name!r}: `run` is empty")
        for out in self.outputs:
            if not _inside(out):
                raise ValueError(
                    f"stage {self.name!r}: output {out!r} must be a relative path inside the run directory"
                )

    @property
    def heading(self) -> str:
        return self.title or self.name


@dataclass
class PipelineConfig:
    """A whole recipe: its name, where the run lives and its stages in order."""

    name: str
    stages: list[StageSpec]
    description: str = ""
    out_dir: str = "runs/{name}"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} appears twice")
            seen.add(stage.name)
        if not self.stages:
            raise ValueError("a recipe needs at least one stage")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir.replace("{name}", self.name))

    def stage(self, name: str) -> StageSpec:
        """The stage called `name` (ValueError listing the stages when there is none)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"no stage {name!r} in recipe {self.name!r}; stages: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def _inside(path: str) -> bool:
    """True when `path` is relative and does not climb out (`..`) of its base."""
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "{root}" not in path


def load_pipeline(
    name_or_path: str | os.PathLike, overrides: list[str] | None = None, out_dir: str | None = None
) -> PipelineConfig:
    """Read an e2e recipe (a file, or a shipped name such as `e2e/tiny_cpu`).

    `overrides` are `STAGE.KEY=VALUE` items: each appends `KEY=VALUE` to that stage's `set` list
    (the stage's own `--set`), e.g. `pretrain_1.steps=80`; `out_dir` replaces the recipe's."""
    path = recipe_path(name_or_path)
    data = read_yaml(path)
    if out_dir is not None:
        data["out_dir"] = out_dir
    cfg = build_config(PipelineConfig, data, str(path))
    for item in overrides or []:
        stage, _, setting = item.partition(".")
        if "=" not in setting:
            raise ConfigError(f"--set {item!r}: expected STAGE.KEY=VALUE, e.g. pretrain_1.steps=80")
        cfg.stage(stage).set.append(setting)
    return cfg


def stage_argv(stage: StageSpec, root: Path, name: str) -> list[str]:
    """The stage's command line (after `mobilellm-r1`), placeholders filled, `set` items appended."""
    argv = [fill(part, root, name) for part in shlex.split(stage.run)]
    for item in stage.set:
        argv += ["--set", fill(item, root, name)]
    return argv


def fill(text: str, root: Path, name: str) -> str:
    """`{root}` -> the starting directory, `{name}` -> the recipe name (other braces are kept)."""
    return text.replace("{root}", str(root)).replace("{name}", name)
