"""benchmarks/paper_claims/coevolution_fig6.py: the pool draw, the probe split, the teacher shape
and the checkpoint listing on cases with a known answer, and the script end to end at a toy size
(2 seeds, 2 steps a stage, corpus scale 0.05)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mobilellm_r1.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "paper_claims"))
import coevolution_fig6 as fig6
import common

from helpers import finite_numbers

VERDICTS = {"holds", "does not hold", "within noise", "not measurable"}
TOY = ["--scale", "0.05", "--seeds", "2", "--device", "cpu", "--micro-batch", "2", "--eval-limit", "2",
       "--em-limit", "3", "--max-new-tokens", "4", "--threads", "1", "--pretrain-steps", "2",
       "--teacher-steps", "2", "--teacher-width", "128", "--teacher-layers", "2", "--pool-docs", "20",
       "--stage-steps", "2", "--curve-points", "2", "--probe-texts", "3"]  # fmt: skip


# ------------------------------------------------------------------ pure functions
@pytest.mark.parametrize(
    ("sizes", "total", "expected"),
    [
        ({"a": 50, "b": 30, "c": 20}, 10, {"a": 5, "b": 3, "c": 2}),  # exact quotas
        ({"a": 1000, "b": 1}, 10, {"a": 9, "b": 1}),  # every source keeps one document
        ({"a": 2, "b": 1}, 3, {"a": 2, "b": 1}),  # everything
        ({"a": 10, "b": 10, "c": 10}, 4, {"a": 2, "b": 1, "c": 1}),  # equal remainders: by name
        ({"a": 60, "b": 30, "c": 10}, 7, {"a": 4, "b": 2, "c": 1}),  # quotas 4.2 / 2.1 / 0.7
        ({"a": 100, "b": 1, "c": 1}, 3, {"a": 1, "b": 1, "c": 1}),  # one each overshoots: taken from a
    ],
)
def test_stratified_counts_keep_the_proportions(sizes, total, expected):
    counts = fig6.stratified_counts(sizes, total)
    assert counts == expected and sum(counts.values()) == total
    assert all(1 <= counts[g] <= sizes[g] for g in sizes)


def test_stratified_counts_refuse_an_impossible_draw():
    with pytest.raises(ValueError, match="--pool-docs must lie in \\[2, 3\\]"):
        fig6.stratified_counts({"a": 2, "b": 1}, 4)
    with pytest.raises(ValueError, match="--pool-docs"):
        fig6.stratified_counts({"a": 2, "b": 1}, 1)


def test_teacher_overrides():
    assert fig6.teacher_overrides(192, 6) == {
        "hidden_size": 192,
        "num_attention_heads": 3,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "intermediate_size_mlp": 576,
        "num_hidden_layers": 6,
    }
    assert fig6.teacher_overrides(0, 0) == {}
    assert fig6.teacher_overrides(0, 8) == {"num_hidden_layers": 8}
    with pytest.raises(ValueError, match="multiple of 64"):
        fig6.teacher_overrides(100, 4)


def test_run_points_lists_kept_checkpoints_then_the_final_model(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for name in ("step_00000010", "step_00000005", "step_00000020", "step_00000015.tmp"):
        (checkpoints / name).mkdir(parents=True)
    (checkpoints / "latest").write_text("step_00000020")
    assert fig6.run_points(tmp_path, 20) == [
        (5, checkpoints / "step_00000005"),
        (10, checkpoints / "step_00000010"),
        (20, tmp_path / "final"),
    ]


def test_stage_steps_must_be_a_multiple_of_the_curve_points(capsys):
    with pytest.raises(SystemExit):
        fig6.parse_args(["--stage-steps", "3", "--curve-points", "2"])
    assert "multiple of --curve-points" in capsys.readouterr().err


# ------------------------------------------------------------------ the data
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> common.Corpus:
    """One toy corpus for the data tests and the end-to-end run (same settings: made once)."""
    return common.prepare_corpus(tmp_path_factory.mktemp("fig6"), 0.05)


def rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_sample_pool_draws_each_file_in_proportion_into_noisy_sources(corpus, tmp_path):
    docs = fig6.corpus_inputs(corpus, 20, 2)["docs"]
    assert set(docs) == {n for parts in fig6.POOL_SOURCES.values() for n in parts}
    pool = fig6.sample_pool(docs, tmp_path / "pool", 20, seed=3)
    assert set(pool) == set(fig6.POOL_SOURCES)
    expected = fig6.stratified_counts({n: len(d) for n, d in docs.items()}, 20)
    assert json.loads((tmp_path / "pool" / "pool.json").read_text())["docs"] == expected
    drawn = {n: 0 for n in docs}
    for source, parts in fig6.POOL_SOURCES.items():
        for row in rows(pool[source][0]):
            name = row["id"].rsplit("-", 1)[0]  # ids are <file>-<index>
            assert name in parts  # each source carries its own noise only
            assert (row["id"], row["text"]) in docs[name]  # a real document, unchanged
            drawn[name] += 1
    assert drawn == expected
    mtime = Path(pool["math"][0]).stat().st_mtime_ns
    assert fig6.sample_pool(docs, tmp_path / "pool", 20, seed=3) == pool
    assert Path(pool["math"][0]).stat().st_mtime_ns == mtime  # same settings: the files are kept
    other = fig6.sample_pool(docs, tmp_path / "other", 20, seed=4)
    assert rows(other["math"][0]) != rows(pool["math"][0])


def test_noise_share_weights_each_source_by_its_noise_tokens(corpus, tmp_path):
    pool = fig6.sample_pool(fig6.corpus_inputs(corpus, 20, 2)["docs"], tmp_path / "pool", 20, seed=3)
    tokenizer = load_tokenizer(corpus.tokenizer)
    counts = {g: fig6.source_tokens(f, tokenizer) for g, f in pool.items()}
    assert all(0 < noise < tokens for tokens, noise in counts.values())  # every source has noise
    natural = {g: float(t) for g, (t, _) in counts.items()}
    total = sum(n for _, n in counts.values()) / sum(t for t, _ in counts.values())
    assert fig6.noise_share(pool, natural, tokenizer) == pytest.approx(total)
    only_math = fig6.noise_share(pool, {"math": 1.0, "code": 0.0, "knowledge": 0.0}, tokenizer)
    assert only_math == pytest.approx(counts["math"][1] / counts["math"][0])


def test_influence_probes_are_the_half_never_held_out(corpus, tmp_path):
    probes = fig6.write_probes(fig6.corpus_inputs(corpus, 20, eval_limit=2)["probes"], tmp_path)
    for cap, path in probes.items():
        texts = [r["text"] for r in rows(corpus.probe(cap))]
        influence = [r["text"] for r in rows(path)]
        assert influence == texts[len(texts) // 2 :]
        assert not set(common.read_texts(corpus.probe(cap), 2)) & set(influence)


def test_settings_the_corpus_cannot_meet_fail_before_training(corpus, tmp_path):
    with pytest.raises(
        ValueError, match=r"probe/math\.jsonl: 5 probing texts; --eval-limit must lie in \[1, 2\]"
    ):
        fig6.corpus_inputs(corpus, 20, eval_limit=3)
    with pytest.raises(ValueError, match=r"--pool-docs must lie in \[9, 225\]"):
        fig6.corpus_inputs(corpus, 10_000, eval_limit=2)
    work = tmp_path / "work"  # a fresh toy corpus (seconds): nothing may train before the error
    with pytest.raises(ValueError, match="--eval-limit"):
        fig6.main([*TOY, "--work", str(work), "--out", str(tmp_path / "r.json"), "--eval-limit", "3"])
    assert not (work / "teacher").exists() and not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------ end to end
def test_coevolution_fig6_end_to_end(corpus):
    out = corpus.work / "fig6.json"
    fig6.main([*TOY, "--work", str(corpus.work), "--out", str(out)])
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert result["command"].startswith("python benchmarks/paper_claims/coevolution_fig6.py --scale 0.05")
    assert {"machine", "settings", "teacher", "seeds", "stats", "verdicts", "seconds"} <= result.keys()
    assert result["teacher"]["parameters"] > 0 and result["teacher"]["shape"]["hidden_size"] == 128
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    for seed in result["seeds"]:
        assert sum(seed["pool"].values()) == 20
        for objective in fig6.OBJECTIVES:
            for arm in fig6.ARMS:
                curve = seed[objective][arm]["curve"]
                assert [p["step"] for p in curve] == [0, 1, 2, 3, 4]  # 2 stages x 2 points
                assert curve[0] == {"step": 0, **seed["pretrained"]}
                assert set(fig6.METRICS) <= curve[-1].keys() and curve[-1] == seed[objective][arm]["final"]
                assert all(0 <= p["exact_match"] <= 1 for p in curve)
            stages = seed[objective]["coevolution"]["stages"]
            assert [s["stage"] for s in stages] == [1, 2]
            assert stages[0]["samples"] == 20 and stages[1]["samples"] == sum(stages[0]["kept"].values())
            assert sum(stages[0]["weights"].values()) == pytest.approx(1.0)
        # stage 1 scores the same pool with the same model under either objective
        assert seed["kd"]["coevolution"]["stages"][0] == seed["ce"]["coevolution"]["stages"][0]
    for objective in fig6.OBJECTIVES:
        assert set(result["verdicts"][objective]) == set(fig6.METRICS)
        assert {v["verdict"] for v in result["verdicts"][objective].values()} <= VERDICTS
        assert all(result["stats"][objective][a][m]["n"] == 2 for a in fig6.ARMS for m in fig6.METRICS)
    finite_numbers(result)

    # a checkpoint converted to a model holds the weights the run exported at that step
    run = corpus.work / "seed_0" / "raw_kd" / "stage_2" / "train"
    converted = fig6.checkpoint_model(run / "checkpoints" / "step_00000002", run.parent.parent / "stage_1" / "train" / "final", corpus.work / "converted")  # fmt: skip
    exported, restored = (
        load_file(run / "final" / "model.safetensors"),
        load_file(converted / "model.safetensors"),
    )
    assert exported.keys() == restored.keys()
    assert all(torch.equal(exported[k], restored[k]) for k in exported)
    earlier = fig6.checkpoint_model(run / "checkpoints" / "step_00000001", run.parent.parent / "stage_1" / "train" / "final", corpus.work / "converted_1")  # fmt: skip
    assert not all(torch.equal(exported[k], v) for k, v in load_file(earlier / "model.safetensors").items())
    graded = rows(corpus.work / "seed_0" / "raw_kd" / "exact_match" / "step_4.jsonl")
    assert len(graded) == 3 and {"id", "completion", "gold", "correct"} <= graded[0].keys()
