"""Config validation at load (issue 17, finding 5): bounds, finite floats, YAML aliases, short errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mobilellm_r1.curation.coevolve import load_coevolve_config
from mobilellm_r1.curation.influence_job import load_job
from mobilellm_r1.data.recipes import load_mixture
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.typed_config import MAX_MESSAGE, ConfigError, load_config, read_yaml

TINY = "train/tiny_cpu"


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"name: run\nsteps: 10\n{text}\n")
    return path


# Each of these trained (or exported a model of NaNs) with exit 0 before.
@pytest.mark.parametrize(
    ("yaml_text", "field", "problem"),
    [
        ("optim: {lr: .inf}", "optim.lr", "finite"),
        ("optim: {lr: .nan}", "optim.lr", "finite"),
        ("optim: {lr: 0}", "optim.lr", "must be > 0"),
        ("optim: {final_lr_ratio: .nan}", "optim.final_lr_ratio", "finite"),
        ("optim: {final_lr_ratio: 1.5}", "optim.final_lr_ratio", "must be <= 1"),
        ("optim: {grad_clip: .nan}", "optim.grad_clip", "finite"),
        ("optim: {grad_clip: -1}", "optim.grad_clip", "must be >= 0"),
        ("optim: {warmup_steps: -5}", "optim.warmup_steps", "must be >= 0"),
        ("optim: {betas: [0.9, 1.5]}", "optim.betas.1", "must be < 1"),
        ("data: {grad_accum: 0}", "data.grad_accum", "must be >= 1"),
        ("data: {micro_batch: 0}", "data.micro_batch", "must be >= 1"),
        ("data: {micro_batch: -2}", "data.micro_batch", "must be >= 1"),
        ("data: {seq_len: 0}", "data.seq_len", "must be >= 1"),
        ("steps: 0", "steps", "must be >= 1"),
        ("grpo: {top_p: 1.5}", "grpo.top_p", "must be <= 1"),
        ("log_every: 0", "log_every", "must be >= 1"),
    ],
)
def test_bad_train_values_are_refused_naming_file_and_field(
    tmp_path: Path, yaml_text: str, field: str, problem: str
) -> None:
    path = _recipe(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=rf"run\.yaml: {field}: .*{problem}") as info:
        load_train_config(str(path))
    assert info.value.field == field and "--set" not in str(info.value)


def test_valid_edges_are_accepted(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "optim: {final_lr_ratio: 0, warmup_steps: 0, lr: 1.0e-3}\ncheckpoint_every: 0")
    cfg = load_train_config(str(path))
    assert cfg.optim.final_lr_ratio == 0 and cfg.optim.warmup_steps == 0 and cfg.checkpoint_every == 0
    # grad_clip: null and 0 both mean no clipping (issue 17: "grad_clip >= 0 or null").
    assert load_train_config(str(_recipe(tmp_path, "optim: {grad_clip: null}"))).optim.grad_clip is None
    assert load_train_config(str(_recipe(tmp_path, "optim: {grad_clip: 0}"))).optim.grad_clip == 0


def test_set_errors_name_the_set_argument() -> None:
    with pytest.raises(
        ConfigError, match=r"steps: expected int, got 'abc' \(the value comes from --set steps=abc"
    ):
        load_train_config(TINY, ["steps=abc"])
    with pytest.raises(ConfigError, match=r"optim\.lr: .*finite.*--set optim\.lr=\.nan"):
        load_train_config(TINY, ["optim.lr=.nan"])
    with pytest.raises(
        ConfigError, match=r"data\.grad_accum: must be >= 1, got 0 .*--set data={grad_accum: 0}"
    ):
        load_train_config(TINY, ["data={grad_accum: 0}"])
    # A bad value that is in the file is not blamed on an unrelated --set.
    with pytest.raises(ConfigError) as info:
        load_train_config(TINY, ["steps=5", "optim.grad_clip=-1"])
    assert "--set optim.grad_clip=-1" in str(info.value) and "steps=5" not in str(info.value)


def test_other_config_classes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"seq_len: must be >= 1, got 0"):
        load_mixture("data/synthetic", ["seq_len=0"])
    with pytest.raises(ConfigError, match=r"min_positive_fraction: must be <= 1"):
        load_coevolve_config("curation/coevolve_synthetic", ["min_positive_fraction=2"])
    with pytest.raises(ConfigError, match=r"influence\.datainf_damping: expected a finite number"):
        load_coevolve_config("curation/coevolve_synthetic", ["influence.datainf_damping=.inf"])
    job = {"samples": ["s.jsonl"], "probes": {"m": "p.jsonl"}, "out": "o"}
    job["checkpoints"] = [{"name": "t1", "step": 1, "model": "m"}]
    with pytest.raises(ConfigError, match=r"command line: batch_size: must be >= 1, got 0"):
        load_job(None, job, ["batch_size=0"])
    with pytest.raises(ConfigError, match=r"checkpoints\.0\.step: must be >= 0"):
        load_job(None, {**job, "checkpoints": [{"name": "t1", "step": -3, "model": "m"}]})


ALIAS_BOMB = "\n".join(
    ["name: bomb", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["steps: *a8"]
)


def test_yaml_alias_bomb_is_refused_fast_with_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"bomb\.yaml: invalid YAML .*aliases \(\*a0\) are not allowed"
    ) as info:
        load_train_config(str(path))
    assert time.perf_counter() - start < 2
    assert len(str(info.value)) <= MAX_MESSAGE
    with pytest.raises(ConfigError, match="aliases"):
        load_train_config(TINY, ["steps=*x"])  # aliases in a --set value too


def test_anchors_without_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "anchor.yaml"
    path.write_text("name: &n run\nsteps: 3\n")
    assert read_yaml(path) == {"name": "run", "steps": 3}


def test_huge_values_are_shown_shortened(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(f"name: run\nsteps: {'x' * 100_000}\noptim: {{betas: {[[0.5] * 1_000] * 2}}}\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(str(path))
    assert "steps: expected int" in str(info.value) and len(str(info.value)) <= MAX_MESSAGE
    path.write_text(f"name: run\noptim: {{betas: {[[0.5] * 1_000] * 2}}}\n")
    with pytest.raises(ConfigError, match=r"optim\.betas\.0") as info:
        load_train_config(str(path))
    assert len(str(info.value)) <= MAX_MESSAGE
    many = {f"k{i}": i for i in range(3_000)}
    with pytest.raises(ConfigError, match="unknown field") as info:
        load_config(type(load_train_config(TINY).optim), _write(tmp_path, many))
    assert len(str(info.value)) <= MAX_MESSAGE


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    return path
