"""Shipped data recipes and recipe errors."""

from __future__ import annotations

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.data.recipes import build_loader, load_mixture
from mobilellm_r1.typed_config import ConfigError

PAPER = {
    "data/pretrain_phase1": {
        "starcoder": 10.66,
        "openwebmath": 6.93,
        "fineweb_edu": 63.75,
        "algebraic_stack": 2.25,
    },
    "data/pretrain_phase2": {"openwebmath": 23.33, "finemath": 8.01, "pes2o": 0.08, "nemotron_math": 3.01},
    "data/midtrain_phase1": {
        "dolmino_dclm": 37.03,
        "nemotron_pretraining_code": 20.69,
        "benchmark_train": 0.0,
    },
    "data/midtrain_phase2": {"dolmino_math": 29.10, "nemotron_cc_math": 19.40, "benchmark_train": 0.97},
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes(name: str) -> None:
    recipe = load_mixture(name)
    weights = {s.name: s.weight for s in recipe.sources}
    for source, weight in PAPER[name].items():
        assert weights[source] == weight
    assert abs(sum(weights.values()) - 100) < 0.05
    assert all(s.hub_id for s in recipe.sources)
    assert recipe.seq_len == (2048 if "pretrain" in name else 4096)
    assert sum(recipe.normalized_weights().values()) == pytest.approx(1.0)


def test_overrides_and_errors(tmp_path) -> None:
    assert load_mixture("data/pretrain_phase1", ["seq_len=128", "sources.0.weight=1"]).seq_len == 128
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsources:\n  - {name: a, weight: 1, wieght: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: sources\.0: unknown field\(s\) wieght"):
        load_mixture(bad)
    bad.write_text("name: x\nsources:\n  - {name: a, weight: abc}\n")
    with pytest.raises(ConfigError, match=r"sources\.0\.weight: expected float"):
        load_mixture(bad)
    bad.write_text("name: x\nsources:\n  - {name: a, weight: 1}\n  - {name: a, weight: 2}\n")
    with pytest.raises(ConfigError, match="duplicate source"):
        load_mixture(bad)
    with pytest.raises(FileNotFoundError):
        load_mixture(tmp_path / "missing.yaml")


def test_missing_shards_are_named(tmp_path) -> None:
    recipe = load_mixture("data/pretrain_phase1", [f"shards_root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="starcoder"):
        build_loader(recipe, batch_size=1, eos_id=0)


SHARED = SHARED_DATA / "corpora"


def test_real_small_recipe_tokenizes_real_text(tmp_path) -> None:
    """The real-corpora recipe reads ../shared/data/corpora; plain-text files are one document each."""
    from mobilellm_r1.data.recipes import prepare
    from mobilellm_r1.data.shards import ShardedSource
    from mobilellm_r1.tokenizer import load_tokenizer

    keep = {"stacks_project", "gsm8k_train"}
    recipe = load_mixture("data/real_small", [f"data_root={SHARED}", f"shards_root={tmp_path}"])
    recipe.sources = [s for s in recipe.sources if s.name in keep]
    tokenizer = load_tokenizer()
    reports = prepare(recipe, tokenizer, workers=1)
    assert sorted(r["name"] for r in reports) == sorted(keep)
    stacks = ShardedSource(tmp_path / "stacks_project")
    assert stacks.num_docs == len(list((SHARED / "stacks_project").glob("*.tex")))
    first = sorted((SHARED / "stacks_project").glob("*.tex"))[0].read_text()
    assert stacks.doc(0).tolist() == tokenizer.encode(first)
    batch = build_loader(recipe, batch_size=2, eos_id=tokenizer.eos_id).next_batch()
    assert batch.input_ids.shape == (2, recipe.seq_len)


def test_text_format_bad_utf8_names_file_and_line(tmp_path) -> None:
    from mobilellm_r1.data.sources import DataError, SourceSpec, iter_documents

    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"line one\nline two \xff\n")
    with pytest.raises(DataError, match=r"notes.txt:2: invalid UTF-8 byte 0xff"):
        list(iter_documents(SourceSpec(name="t", path=str(bad), format="text")))
    docs = list(iter_documents(SourceSpec(name="t", path=str(tmp_path), format="text", on_error="skip")))
    assert docs == []
