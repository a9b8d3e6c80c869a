"""benchmarks/paper_claims: the verdict and rank statistics on cases with a known answer, and
both claim scripts end to end at a toy size (2 seeds, a few steps, corpus scale 0.05)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "paper_claims"))
import common
import joint_sft
import rankme_lr

from helpers import finite_numbers

VERDICTS = {"holds", "does not hold", "within noise", "not measurable"}
TOY = ["--scale", "0.05", "--seeds", "2", "--device", "cpu", "--micro-batch", "2", "--eval-limit", "3",
       "--threads", "1"]  # fmt: skip


# ------------------------------------------------------------------ statistics
def test_mean_std_is_the_sample_standard_deviation():
    assert common.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert common.mean_std([5.0])["std"] == 0.0
    with pytest.raises(ValueError, match="no values"):
        common.mean_std([])


@pytest.mark.parametrize(
    ("a", "b", "sign", "expected"),
    [
        ([0.30, 0.31, 0.29], [0.10, 0.11, 0.09], 1, "holds"),  # far apart, the paper's sign
        ([0.10, 0.11, 0.09], [0.30, 0.31, 0.29], 1, "does not hold"),  # far apart, the other sign
        ([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], -1, "holds"),  # losses: lower is the paper's sign
        ([0.2, 0.5, 0.8], [0.1, 0.4, 0.7], 1, "within noise"),  # 0.1 apart, SE ~0.24
        ([0.0, 0.0], [0.0, 0.0], 1, "within noise"),  # identical: no effect
        ([1.0, 1.0], [0.0, 0.0], 1, "holds"),  # no spread, a real difference
        ([math.nan, 1.0], [0.0, 0.0], 1, "not measurable"),
    ],
)
def test_verdict_on_known_cases(a, b, sign, expected):
    assert common.verdict(a, b, sign)["verdict"] == expected


def test_verdict_threshold_is_two_pooled_standard_errors():
    # each arm: 2 values 2 apart -> sample variance 2; pooled SE = sqrt(2/2 + 2/2) = sqrt(2)
    v = common.verdict([0.0, 2.0], [-1.0, 1.0], 1)
    assert v["difference"] == pytest.approx(1.0) and v["se"] == pytest.approx(math.sqrt(2))
    assert v["verdict"] == "within noise"
    assert common.verdict([1.5, 3.5], [-1.0, 1.0], 1)["verdict"] == "within noise"  # 2.5 < 2.83
    assert common.verdict([2.0, 4.0], [-1.0, 1.0], 1)["verdict"] == "holds"  # 3.0 > 2.83
    with pytest.raises(ValueError, match="expected_sign"):
        common.verdict([1.0], [0.0], 0)


def test_paired_verdict_cancels_what_moves_both_arms_alike():
    a, b = [1.0, 2.0, 3.0], [0.9, 1.9, 2.9]  # seeds spread both arms; each pair differs by 0.1
    assert common.verdict(a, b, 1)["verdict"] == "within noise"
    paired = common.paired_verdict(a, b, 1)
    assert paired["difference"] == pytest.approx(0.1) and paired["verdict"] == "holds"
    assert common.paired_verdict(b, a, 1)["verdict"] == "does not hold"
    assert common.paired_verdict([1.0, 2.0], [0.0, 2.5], 1)["verdict"] == "within noise"
    with pytest.raises(ValueError):
        common.paired_verdict([1.0, 2.0], [1.0], 1)


def test_ranks_and_spearman():
    assert common.ranks([3.0, 1.0, 2.0]) == [3.0, 1.0, 2.0]
    assert common.ranks([1.0, 1.0, 2.0]) == [1.5, 1.5, 3.0]
    assert common.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert common.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert common.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(common.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal-length"):
        common.spearman([1, 2], [1])


# ------------------------------------------------------------------ the scripts
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One work directory for both scripts (same corpus settings: the corpus is made once)."""
    return tmp_path_factory.mktemp("paper_claims")


def test_work_dir_of_other_corpus_settings_is_refused(work):
    common.prepare_corpus(work, 0.05)
    with pytest.raises(ValueError, match=r"corpus\.json"):
        common.prepare_corpus(work, 0.1)


def test_joint_sft_end_to_end(work):
    out = work / "joint_sft.json"
    argv = [*TOY, "--work", str(work), "--out", str(out), "--pretrain-steps", "2", "--max-new-tokens", "4",
            "--general-epochs", "0.25", "--reasoning-epochs", "0.25"]  # fmt: skip
    joint_sft.main(argv)
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert result["command"].startswith("python benchmarks/paper_claims/joint_sft.py --scale 0.05")
    assert {"machine", "settings", "seeds", "stats", "verdicts", "seconds"} <= result.keys()
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    for seed in result["seeds"]:
        steps = seed["steps"]
        assert steps["joint"] == steps["sequential"]["general"] + steps["sequential"]["reasoning"]
        assert min(seed["trained_tokens"].values()) > 0
        for arm in joint_sft.ARMS:
            assert set(joint_sft.METRICS) <= seed[arm].keys()
            assert 0 <= seed[arm]["exact_match"] <= 1 and 0 <= seed[arm]["mmlu_acc"] <= 1
    for arm in joint_sft.ARMS:
        assert all(result["stats"][arm][m]["n"] == 2 for m in joint_sft.METRICS)
    assert set(result["verdicts"]) == set(joint_sft.METRICS)
    assert {v["verdict"] for v in result["verdicts"].values()} <= VERDICTS - {"not measurable"}
    assert {v["paired"]["verdict"] for v in result["verdicts"].values()} <= VERDICTS
    finite_numbers(result)


def test_rankme_lr_end_to_end(work):
    out = work / "rankme_lr.json"
    argv = [*TOY, "--work", str(work), "--out", str(out), "--pretrain-steps", "2", "--midtrain-steps", "1",
            "--rankme-texts", "3", "--lrs", "1e-3", "1e-2", "5e-2"]  # fmt: skip
    rankme_lr.main(argv)
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert {"spearman_stats", "spearman_pooled", "verdicts", "seeds", "settings"} <= result.keys()
    for seed in result["seeds"]:
        assert [p["lr"] for p in seed["points"]] == [1e-3, 1e-2, 5e-2]
        for point in seed["points"]:
            assert point["rankme"] >= 1.0  # RankMe lies in [1, min(N, d)]
            assert set(rankme_lr.POST_METRICS) <= point["post_midtrain"].keys()
        for rhos in seed["spearman"].values():
            assert all(-1.0 <= r <= 1.0 for r in rhos.values())
    assert len(result["verdicts"]) == 2 * len(rankme_lr.POST_METRICS)
    assert {v["verdict"] for v in result["verdicts"].values()} <= VERDICTS
    assert {v["paired"]["verdict"] for v in result["verdicts"].values()} <= VERDICTS
    finite_numbers(result)
