"""What a run must do: each stage's content key, and whether it is done, to resume, or to (re)run.

A stage's key is a hash of everything its result depends on: its command line, the package
version, the content of the recipe files it names and of the shipped recipes those name in turn
(`referenced_recipes`), and its inputs. An input that an earlier stage
produces contributes that stage's key (so a changed setting re-runs the stage and all after it);
any other input contributes its files' xxh3 digests (sizes and times past 2 GiB). A stage is skipped when its marker says
`done` under the same key and its outputs exist; it resumes when the marker says `running` under
the same key (a killed run); otherwise it runs from scratch after its old outputs are deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from .. import __version__
from ..data.recipes import RECIPE_PACKAGE
from ..train.manifest import file_digest
from .config import PipelineConfig, StageSpec, fill, stage_argv
from .markers import Marker, read_marker

Action = Literal["skip", "resume", "run", "rerun", "forced", "unselected"]  # unselected: --only another


@dataclass(frozen=True)
class StagePlan:
    """One stage of a plan: its command line, content key and what will happen to it."""

    stage: StageSpec
    argv: list[str]
    key: str
    action: Action
    marker: Marker | None

    @property
    def will_run(self) -> bool:
        return self.action not in ("skip", "unselected")


CONTENT_HASH_LIMIT = 2 * 2**30  # bytes of an external input hashed by content; above: size + mtime


def content_digest(path: Path) -> str:
    """A digest of a file, or of every file under a directory (relative names included): the
    files' xxh3 digests, or, for inputs larger than CONTENT_HASH_LIMIT in all (pretraining shards
    of a cluster run), their sizes and modification times."""
    if path.is_file():
        files, base = [path], path.parent
    elif path.is_dir():
        files, base = sorted(q for q in path.rglob("*") if q.is_file()), path
    else:
        raise FileNotFoundError(f"input not found: {path}")
    by_content = sum(f.stat().st_size for f in files) <= CONTENT_HASH_LIMIT
    h = hashlib.sha256()
    for f in files:
        stat = f.stat()
        mark = file_digest(f)["xxh3_128"] if by_content else f"{stat.st_size}:{stat.st_mtime_ns}"
        h.update(f"{f.relative_to(base)}\0{mark}\n".encode())
    return h.hexdigest()


RECIPE_NAME = re.compile(r"[A-Za-z0-9_./-]+")


def _shipped(name: str) -> Path | None:
    """The shipped recipe called `name` (`train/tiny_cpu`), or None."""
    if "/" not in name or name.startswith("/") or ".." in name:
        return None
    entry = resources.files(RECIPE_PACKAGE) / f"{name.removesuffix('.yaml')}.yaml"
    return Path(str(entry)) if entry.is_file() else None


def referenced_recipes(
    argv: list[str], run_dir: Path, generated: Callable[[Path], bool] = lambda path: False
) -> list[Path]:
    """The recipe files a command line depends on: those it names (`--recipe`, `--config`, or in a
    `--set` value such as `data.recipe=mix/phase1.yaml`), and, transitively, the shipped recipes
    those name (a train recipe names its data recipe). A file a stage of the run writes
    (`generated`) is not read for names: it exists only after that stage ran, and the names in it
    are already in its producer's key."""
    found: dict[Path, None] = {}
    todo = [w for arg in argv for w in RECIPE_NAME.findall(arg)]
    while todo:
        word = todo.pop()
        local = run_dir / word
        shipped = _shipped(word)
        # a run-local recipe, also one an earlier stage has yet to write (then its producer counts)
        path = local if word.endswith(".yaml") and (local.is_file() or shipped is None) else shipped
        if path is None or path in found:
            continue
        found[path] = None
        if path.is_file() and not generated(path):
            todo += RECIPE_NAME.findall(path.read_text())
    return sorted(found)


def producer(path: str, earlier: dict[str, StagePlan]) -> StagePlan | None:
    """The earlier stage whose outputs hold `path` (None: an input from outside the run)."""
    parts = Path(path).parts
    for plan in earlier.values():
        for out in plan.stage.outputs:
            if parts[: len(Path(out).parts)] == Path(out).parts:
                return plan
    return None


def stage_key(
    stage: StageSpec, argv: list[str], run_dir: Path, root: Path, name: str, earlier: dict[str, StagePlan]
) -> str:
    """The content key of `stage` (see the module docstring)."""
    parts: dict[str, object] = {"argv": argv, "version": __version__}

    def generated(path: Path) -> bool:
        return _recipe_maker(path, stage, run_dir, root, name, earlier)[0]

    for path in referenced_recipes(argv, run_dir, generated):
        if (part := _recipe_part(path, stage, run_dir, root, name, earlier)) is not None:
            parts[f"recipe:{path.name}"] = part
    for raw in stage.inputs:
        path = fill(raw, root, name)
        source = producer(path, earlier)
        if source is not None:
            parts[f"input:{path}"] = f"stage:{source.stage.name}:{source.key}"
        else:
            parts[f"input:{path}"] = content_digest(run_dir / path)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _recipe_maker(
    path: Path, stage: StageSpec, run_dir: Path, root: Path, name: str, earlier: dict[str, StagePlan]
) -> tuple[bool, StagePlan | None]:
    """Whether a stage of this run writes the recipe file `path` (`stage` itself or an earlier
    one), and the earlier stage that does (None: `stage` itself, or nobody)."""
    local = path.resolve()
    if not local.is_relative_to(run_dir.resolve()):
        return False, None
    rel = local.relative_to(run_dir.resolve()).as_posix()
    own = [Path(fill(out, root, name)).parts for out in stage.outputs]
    if any(Path(rel).parts[: len(out)] == out for out in own):
        return True, None
    source = producer(rel, earlier)
    return source is not None, source


def _recipe_part(
    path: Path, stage: StageSpec, run_dir: Path, root: Path, name: str, earlier: dict[str, StagePlan]
) -> str | None:
    """What a recipe file adds to a key: nothing when the stage writes it itself (`curate mix
    --out mix/p.yaml`), its producer's key when an earlier stage writes it (the same before and
    after that stage ran), else its content."""
    made, source = _recipe_maker(path, stage, run_dir, root, name, earlier)
    if source is not None:
        return f"stage:{source.stage.name}:{source.key}"
    return None if made else content_digest(path)


def make_plan(
    cfg: PipelineConfig, root: Path, *, start: str | None = None, only: str | None = None
) -> list[StagePlan]:
    """Every stage with its key and action. `start` forces that stage and the later ones to run;
    `only` runs that stage alone (forced), whose inputs must then exist."""
    run_dir = root / cfg.run_dir
    first_forced = cfg.names.index(cfg.stage(start).name) if start else len(cfg.stages)
    if only:
        missing = [p for p in cfg.stage(only).inputs if not (run_dir / fill(p, root, cfg.name)).exists()]
        if missing:
            raise FileNotFoundError(
                f"--only {only}: its inputs are missing in {run_dir}: {', '.join(missing)}"
            )
    plans: dict[str, StagePlan] = {}
    for index, stage in enumerate(cfg.stages):
        argv = stage_argv(stage, root, cfg.name)
        marker = read_marker(run_dir, stage.name)
        if only and stage.name != only:
            key = _key_if_known(stage, argv, run_dir, root, cfg.name, plans)
            plans[stage.name] = StagePlan(stage, argv, key, "unselected", marker)
            continue
        key = stage_key(stage, argv, run_dir, root, cfg.name, plans)
        forced = index >= first_forced or stage.name == only
        plans[stage.name] = StagePlan(stage, argv, key, _action(stage, key, marker, run_dir, forced), marker)
    return list(plans.values())


def _key_if_known(
    stage: StageSpec, argv: list[str], run_dir: Path, root: Path, name: str, earlier: dict[str, StagePlan]
) -> str:
    """A stage's key, or "" when an input it hashes is absent (a stage `--only` does not run)."""
    try:
        return stage_key(stage, argv, run_dir, root, name, earlier)
    except FileNotFoundError:
        return ""


def _action(stage: StageSpec, key: str, marker: Marker | None, run_dir: Path, forced: bool) -> Action:
    if forced:
        return "forced"
    if marker is None or marker.key != key:
        return "run" if marker is None else "rerun"
    if marker.state == "done" and all((run_dir / out).exists() for out in stage.outputs):
        return "skip"
    return "resume"
