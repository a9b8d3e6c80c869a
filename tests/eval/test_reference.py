"""Tests for the published MobileLLM-R1 reference numbers."""

import pytest

from mobilellm_r1.eval.reference import PAPER_RESULTS, SOURCE_LABELS, reference_for

MOBILELLM_R1 = [
    f"facebook/MobileLLM-R1-{size}{suffix}" for size in ("140M", "360M", "950M") for suffix in ("-base", "")
]


def test_values_are_fractions() -> None:
    for model, results in PAPER_RESULTS.items():
        assert results, model
        for task, value in results.items():
            assert 0.0 <= value <= 1.0, (model, task, value)


def test_all_mobilellm_r1_checkpoints_present() -> None:
    for name in MOBILELLM_R1:
        assert name in PAPER_RESULTS
        assert name in SOURCE_LABELS


def test_spot_values() -> None:
    # README "MobileLLM-R1 base model" / "post-trained model" tables.
    assert PAPER_RESULTS["facebook/MobileLLM-R1-950M-base"]["gsm8k"] == pytest.approx(0.616)
    assert PAPER_RESULTS["facebook/MobileLLM-R1-950M-base"]["humaneval"] == pytest.approx(0.463)
    assert PAPER_RESULTS["facebook/MobileLLM-R1-950M"]["math500"] == pytest.approx(0.740)
    assert PAPER_RESULTS["facebook/MobileLLM-R1-950M"]["aime24"] == pytest.approx(0.155)
    assert PAPER_RESULTS["facebook/MobileLLM-R1-360M"]["livecodebench"] == pytest.approx(0.051)
    assert PAPER_RESULTS["Qwen/Qwen3-0.6B"]["aime25"] == pytest.approx(0.170)


def test_dash_cells_are_omitted() -> None:
    assert "mmlu" not in PAPER_RESULTS["facebook/MobileLLM-R1-140M-base"]
    assert "aime24" not in PAPER_RESULTS["facebook/MobileLLM-R1-360M"]
    assert "aime25" not in PAPER_RESULTS["facebook/MobileLLM-R1-140M"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("facebook/MobileLLM-R1-950M", "facebook/MobileLLM-R1-950M"),
        ("FACEBOOK/mobilellm-r1-950m-BASE", "facebook/MobileLLM-R1-950M-base"),
        ("/ckpt/MobileLLM-R1-950M-base", "facebook/MobileLLM-R1-950M-base"),
        ("/ckpt/MobileLLM-R1-950M-base/", "facebook/MobileLLM-R1-950M-base"),
        ("/models/facebook/MobileLLM-R1-360M", "facebook/MobileLLM-R1-360M"),
        ("/hf/hub/models--facebook--MobileLLM-R1-140M-base", "facebook/MobileLLM-R1-140M-base"),
        ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
        ("Qwen/Qwen3-0.6B-Base", "Qwen/Qwen3-0.6B-Base"),
    ],
)
def test_reference_for_matches(query: str, expected: str) -> None:
    assert reference_for(query) == PAPER_RESULTS[expected]


@pytest.mark.parametrize(
    "query", ["facebook/MobileLLM-R1-950M-base-v2", "/ckpt/my-MobileLLM-R1-950M-step100", "gpt2", ""]
)
def test_reference_for_no_match(query: str) -> None:
    assert reference_for(query) is None


def test_reference_for_returns_copy() -> None:
    ref = reference_for("facebook/MobileLLM-R1-950M")
    assert ref is not None
    ref["math500"] = 0.0
    assert PAPER_RESULTS["facebook/MobileLLM-R1-950M"]["math500"] == pytest.approx(0.74)
