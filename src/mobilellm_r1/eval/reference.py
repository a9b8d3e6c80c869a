"""Published MobileLLM-R1 evaluation numbers, as fractions in [0, 1], for comparing our runs against.

Sources
-------
* Primary (transcribed verbatim): the "Evaluation" section of the official GitHub README,
  https://github.com/facebookresearch/MobileLLM-R1/blob/main/README.md (stored copy at commit
  463ff810245e43f833b9bfa105304fc2d9278f6e), tables "MobileLLM-R1 base model" and
  "MobileLLM-R1 post-trained model". The README links the technical report
  (arXiv:2509.24945, "MobileLLM-R1: Exploring the Limits of Sub-Billion Language Model Reasoners
  with Open Training Recipes"), and the Hugging Face model cards
  (https://huggingface.co/facebook/MobileLLM-R1-950M, ``-950M-base``, ``-360M``, ...) show the
  same comparison as images.
* Cross-check: the abstract of arXiv:2509.24945 v2/v3 (https://arxiv.org/html/2509.24945v3) says
  "MobileLLM-R1-950M achieves an AIME score of 15.5, compared to just 0.6 for OLMo-2-1.48B and
  0.3 for SmolLM-2-1.7B", matching the README's AIME'24 column (15.5 / 0.6 / 0.3).

Base-model table (README), columns and protocol:
  MATH500 4-shot em | GSM8K 8-shot em | MBPP 3-shot pass@1 | HumanEval 0-shot pass@1 |
  CommonSense Avg. 0-shot accuracy | MMLU 5-shot accuracy.
  "CommonSense Avg. denotes an average of 8 tasks in CommonSense Reasoning benchmarks including
  ARC-easy, ARC-challenge, BoolQ, PIQA, SIQA, HellaSwag, OBQA, and WinoGrand. Models with fewer than
  150M parameters do not yield reliable MMLU scores and are therefore denoted as '—'."
Post-trained table (README), all 0-shot:
  MATH500 pass@1 | GSM8K pass@1 | AIME'24 pass@1, n=64 | AIME'25 pass@1, n=64 |
  LiveCodeBench-v6 pass@1, n=16.
  "Models with fewer than 400M parameters do not produce reliable AIME scores and are therefore
  denoted as '—'."

Gaps and discrepancies
----------------------
* The per-task commonsense scores (ARC-e/ARC-c/BoolQ/PIQA/SIQA/HellaSwag/OBQA/WinoGrande) were not
  found in any readable source, so only ``commonsense_avg`` is recorded; the individual tasks are
  still listed in the ``base`` suite (:data:`mobilellm_r1.eval.registry.PAPER_SUITES`) because they
  make up that average.
* The body tables of the arXiv HTML (v2/v3) could not be read from the stored copy, so the table
  numbers of the paper itself could not be compared cell by cell with the README. One third-party
  review quotes MATH500 "74.6" for MobileLLM-R1-950M (README: 74.0); this is unconfirmed and the
  README value is kept.
* '—' cells (MMLU below 150M, AIME below 400M) are omitted, never filled in.
* The README labels comparison models by display name (e.g. "LLaMA3.2-1B-base"); the hub ids used as
  keys here are our mapping of those labels to the released checkpoints (see ``SOURCE_LABELS``).
"""

from __future__ import annotations

import re

__all__ = ["PAPER_RESULTS", "SOURCE", "SOURCE_LABELS", "SUITE_PROTOCOL", "reference_for"]

SOURCE = (
    "https://github.com/facebookresearch/MobileLLM-R1 README 'Evaluation' tables "
    "(commit 463ff810245e43f833b9bfa105304fc2d9278f6e); paper arXiv:2509.24945"
)

# Protocol of each published column, as stated in the README table headers.
SUITE_PROTOCOL: dict[str, dict[str, str]] = {
    "base": {
        "math500": "4-shot, exact match",
        "gsm8k": "8-shot, exact match",
        "mbpp": "3-shot, pass@1",
        "humaneval": "0-shot, pass@1",
        "commonsense_avg": "0-shot accuracy, mean of ARC-e, ARC-c, BoolQ, PIQA, SIQA, HellaSwag, OBQA, WinoGrande",
        "mmlu": "5-shot, accuracy",
    },
    "post": {
        "math500": "0-shot, pass@1",
        "gsm8k": "0-shot, pass@1",
        "aime24": "0-shot, pass@1 averaged over n=64 samples",
        "aime25": "0-shot, pass@1 averaged over n=64 samples",
        "livecodebench": "LiveCodeBench-v6, 0-shot, pass@1 averaged over n=16 samples",
    },
}

_BASE_COLUMNS = ("math500", "gsm8k", "mbpp", "humaneval", "commonsense_avg", "mmlu")
_POST_COLUMNS = ("math500", "gsm8k", "aime24", "aime25", "livecodebench")

# (hub id, README row label, percentages in README column order; None = '—' in the README)
_BASE_ROWS: tuple[tuple[str, str, tuple[float | None, ...]], ...] = (
    ("HuggingFaceTB/SmolLM2-135M", "SmolLM2-135M-base", (0.4, 1.8, 3.8, 0.0, 50.7, None)),
    ("facebook/MobileLLM-R1-140M-base", "MobileLLM-R1-140M-base", (4.6, 16.3, 5.4, 15.9, 44.3, None)),
    ("google/gemma-3-270m", "Gemma-3-270M-pt", (0.6, 1.1, 2.0, 3.1, 48.4, 26.5)),
    ("HuggingFaceTB/SmolLM2-360M", "SmolLM2-360M-base", (1.8, 5.0, 19.4, 0.0, 56.6, 24.7)),
    ("facebook/MobileLLM-R1-360M-base", "MobileLLM-R1-360M-base", (13.4, 39.4, 20.8, 32.9, 51.0, 26.8)),
    ("Qwen/Qwen2.5-0.5B", "Qwen2.5-0.5B-base", (14.8, 41.8, 29.6, 28.1, 52.3, 47.5)),
    ("Qwen/Qwen3-0.6B-Base", "Qwen3-0.6B-base", (29.8, 60.9, 39.0, 30.5, 55.3, 52.4)),
    ("facebook/MobileLLM-R1-950M-base", "MobileLLM-R1-950M-base", (26.8, 61.6, 39.2, 46.3, 58.6, 47.4)),
    ("google/gemma-3-1b-pt", "Gemma-3-1B-pt", (0.6, 2.4, 9.4, 6.1, 57.3, 26.1)),
    ("meta-llama/Llama-3.2-1B", "LLaMA3.2-1B-base", (1.6, 6.8, 26.6, 17.1, 58.4, 32.0)),
    ("allenai/OLMo-2-0425-1B", "OLMo-2-0425-1B-base", (5.2, 39.8, 7.8, 6.7, 61.0, 42.4)),
    ("Qwen/Qwen2.5-1.5B", "Qwen2.5-1.5B-base", (31.0, 68.4, 44.6, 36.6, 58.7, 61.2)),
    ("HuggingFaceTB/SmolLM2-1.7B", "SmolLM2-1.7B-base", (11.6, 31.8, 35.4, 0.6, 62.9, 50.0)),
    ("Qwen/Qwen3-1.7B-Base", "Qwen3-1.7B-base", (38.5, 76.2, 56.4, 47.6, 60.9, 62.1)),
)

_POST_ROWS: tuple[tuple[str, str, tuple[float | None, ...]], ...] = (
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", (3.0, 2.4, None, None, 0.0)),
    ("facebook/MobileLLM-R1-140M", "MobileLLM-R1-140M", (6.2, 4.1, None, None, 1.7)),
    ("google/gemma-3-270m-it", "Gemma-3-270m-it", (6.8, 8.4, None, None, 0.0)),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct", (3.4, 8.1, None, None, 0.7)),
    ("facebook/MobileLLM-R1-360M", "MobileLLM-R1-360M", (28.4, 24.5, None, None, 5.1)),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct", (31.2, 48.1, 0.1, 0.3, 3.6)),
    ("Qwen/Qwen3-0.6B", "Qwen3-0.6B", (73.0, 79.2, 11.3, 17.0, 14.9)),
    ("facebook/MobileLLM-R1-950M", "MobileLLM-R1-950M", (74.0, 67.5, 15.5, 16.3, 19.9)),
    ("google/gemma-3-1b-it", "Gemma-3-1B-it", (45.4, 62.9, 0.9, 0.0, 2.0)),
    ("meta-llama/Llama-3.2-1B-Instruct", "LLaMA3.2-1B-Instruct", (24.8, 38.8, 1.1, 0.2, 4.1)),
    ("allenai/OLMo-2-0425-1B-Instruct", "OLMo-2-0425-1B-Instruct", (19.2, 69.7, 0.6, 0.1, 0.0)),
    ("nvidia/OpenReasoning-Nemotron-1.5B", "OpenReasoning-Nemotron-1.5B", (83.4, 76.7, 49.7, 40.4, 28.3)),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "DeepSeek-R1-Distill-Qwen-1.5B",
        (83.2, 77.3, 29.1, 23.4, 19.9),
    ),
    ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5-1.5B-Instruct", (54.0, 70.0, 2.5, 0.9, 7.9)),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct", (19.2, 41.8, 0.3, 0.1, 4.4)),
    ("Qwen/Qwen3-1.7B", "Qwen3-1.7B", (89.4, 90.3, 47.0, 37.0, 29.8)),
)


def _build(
    columns: tuple[str, ...], rows: tuple[tuple[str, str, tuple[float | None, ...]], ...]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for hub_id, _label, pcts in rows:
        pairs = zip(columns, pcts, strict=True)  # a row with a missing/extra cell is an error
        out[hub_id] = {task: round(p / 100.0, 6) for task, p in pairs if p is not None}
    return out


PAPER_RESULTS: dict[str, dict[str, float]] = {
    **_build(_BASE_COLUMNS, _BASE_ROWS),
    **_build(_POST_COLUMNS, _POST_ROWS),
}

# hub id -> row label used in the README tables
SOURCE_LABELS: dict[str, str] = {hub_id: label for hub_id, label, _ in (*_BASE_ROWS, *_POST_ROWS)}

_HF_CACHE_DIR = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


def _candidates(model_name_or_path: str) -> tuple[str, str]:
    """(full string, last path component) of a hub id or path, lower-cased, without trailing '/'."""
    s = model_name_or_path.strip().replace("\\", "/").rstrip("/").lower()
    last = s.rsplit("/", 1)[-1]
    m = _HF_CACHE_DIR.match(last)  # ~/.cache/huggingface/hub/models--facebook--MobileLLM-R1-950M
    if m:
        return f"{m['org']}/{m['name']}", m["name"]
    return s, last


def reference_for(model_name_or_path: str) -> dict[str, float] | None:
    """Published results for a hub id or a local checkpoint directory, else None.

    Matches (case-insensitively) the exact hub id ("facebook/MobileLLM-R1-950M"), a path ending with
    the hub id ("/models/facebook/MobileLLM-R1-950M"), a directory whose name is the checkpoint name
    ("/ckpt/MobileLLM-R1-950M-base"), or a Hugging Face cache directory ("models--facebook--...").
    The name must match whole: "MobileLLM-R1-950M" never matches the "-base" checkpoint.
    """
    full, last = _candidates(model_name_or_path)
    for hub_id, results in PAPER_RESULTS.items():
        hub = hub_id.lower()
        if full == hub or full.endswith("/" + hub) or last == hub.rsplit("/", 1)[-1]:
            return dict(results)
    return None
