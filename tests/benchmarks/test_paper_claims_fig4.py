"""benchmarks/paper_claims/influence_fig4.py: Eq. 3-4's combination of per-capability scores on a
case with a known answer, and the script end to end at a toy size on both corpora (2 seeds, a
few steps, both ablations)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers import SHARED_DATA, finite_numbers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "paper_claims"))
import influence_fig4 as fig4

VERDICTS = {"holds", "does not hold", "within noise", "not measurable"}


def capability_table(capability: str, columns: dict[str, list[float]], ids=("a", "b")) -> pa.Table:
    """An influence table as the scorer writes it for one capability's model."""
    return pa.table(
        {
            "id": list(ids),
            "source": ["s1", "s2"][: len(ids)],
            "tokens": [10, 20][: len(ids)],
            **{f"{capability}@{t}": v for t, v in columns.items()},
        }
    )


def test_combine_weights_checkpoints_by_step_and_capabilities_equally():
    tables = {
        "math": capability_table("math", {"t1": [1.0, 0.0], "t3": [2.0, 4.0]}),
        "code": capability_table("code", {"t1": [0.0, 8.0], "t3": [4.0, 0.0]}),
    }
    steps = {"math": {"t1": 1, "t3": 3}, "code": {"t1": 1, "t3": 3}}
    table = fig4.combine(tables, steps)
    # J_c = 1/4 score@t1 + 3/4 score@t3
    np.testing.assert_allclose(table.column("math").to_numpy(), [1.75, 3.0])
    np.testing.assert_allclose(table.column("code").to_numpy(), [3.0, 2.0])
    np.testing.assert_allclose(table.column("joint").to_numpy(), [2.375, 2.5])  # mean over capabilities
    # each J_c over its standard deviation (0.625 and 0.5), then summed
    np.testing.assert_allclose(table.column("balanced").to_numpy(), [8.8, 8.8])
    assert table.column("source").to_pylist() == ["s1", "s2"]
    assert table.column("tokens").to_pylist() == [10, 20]


def test_combine_refuses_tables_of_other_samples():
    tables = {
        "math": capability_table("math", {"t1": [1.0, 2.0]}),
        "code": capability_table("code", {"t1": [1.0, 2.0]}, ids=("a", "c")),
    }
    with pytest.raises(ValueError, match=r"'code'.*other samples"):
        fig4.combine(tables, {"math": {"t1": 1}, "code": {"t1": 1}})


def test_diagnostics_separate_capability_terms_and_the_length_factor():
    tables = {
        "math": capability_table("math", {"t1": [1.0, -1.0]}),
        "code": capability_table("code", {"t1": [3.0, 7.0]}),
    }
    d = fig4.diagnostics(fig4.combine(tables, {"math": {"t1": 1}, "code": {"t1": 1}}), ["math", "code"])
    assert d["capability_rho"]["math"] == pytest.approx({"s1": 10.0, "s2": -20.0})  # I(x) * len(x)
    assert d["capability_rho"]["code"] == pytest.approx({"s1": 30.0, "s2": 140.0})
    assert d["capability_std"] == pytest.approx({"math": 1.0, "code": 2.0})
    assert d["capability_rho_without_len"]["code"] == pytest.approx({"s1": 3.0, "s2": 7.0})
    assert d["rho_without_len"] == pytest.approx({"s1": 2.0, "s2": 3.0})  # joint: the mean of the two


def test_steps_must_be_multiples_of_the_checkpoints():
    with pytest.raises(SystemExit):
        fig4.parse_args(["--steps", "12", "--checkpoints", "5"])


@pytest.fixture
def test_influence_fig4_end_to_end(tmp_path):
    out = tmp_path / "fig4.json"
    argv = ["--work", str(tmp_path / "work"), "--out", str(out), "--seeds", "2", "--device", "cpu",
            "--threads", "1", "--scale", "0.05", "--doc-cap", "40", "--steps", "5", "--capability-steps", "5",
            "--samples", "2", "--probe-size", "3", "--score-len", "24", "--eval-limit", "2", "--micro-batch", "2",
            "--real-corpora", str(SHARED_DATA / "corpora"), "--eval-dir", str(SHARED_DATA / "eval"),
            "--ablations", "balanced", "shared"]  # fmt: skip
    fig4.main(argv)
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert result["command"].startswith("python benchmarks/paper_claims/influence_fig4.py --work")
    assert {"machine", "claim", "settings", "corpora", "seconds"} <= result.keys()
    arms = [*fig4.ARMS, *fig4.ABLATIONS]
    for name, corpus in result["corpora"].items():
        assert corpus["metrics"][:4] == [fig4.PRIMARY, *fig4.CAPABILITIES]
        assert [s["seed"] for s in corpus["seeds"]] == [0, 1]
        for seed in corpus["seeds"]:
            assert sorted(seed["nll"]) == sorted(arms)
            assert len(set(seed["trained_tokens"].values())) == 1  # equal tokens in every arm
            for arm in arms:
                assert sum(seed["weights"][arm].values()) == pytest.approx(1.0)
                assert set(corpus["metrics"]) == set(seed["nll"][arm])
            assert set(seed["diagnostics"]["capability_rho"]) == set(fig4.CAPABILITIES)
        assert set(corpus["stats"]) == set(arms)
        assert len(corpus["verdicts"]) == 3 * 2 * len(corpus["metrics"])  # 3 mixtures x 2 baselines
        assert {v["verdict"] for v in corpus["verdicts"].values()} <= VERDICTS
        assert {v["paired"]["verdict"] for v in corpus["verdicts"].values()} <= VERDICTS
        expected = {"real": "wikitext2_test", "synthetic": "math500_ref"}[name]
        assert expected in corpus["metrics"]
    assert finite_numbers(result)
