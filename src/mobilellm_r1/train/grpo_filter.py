"""What GRPO's pass-rate filter (`grpo.filter_samples`, train/objectives/grpo.py) leaves in its
run directory and how its counts are tallied; torch-free, so the run report reads it cheaply."""

from __future__ import annotations

FILTER_FILE = "grpo_prompt_filter.json"  # in out_dir: digest, samples, prompt ids, pass counts


def pass_rate_summary(counts: list[int], samples: int) -> dict[str, int]:
    """The pass-rate filter's tally: prompts, samples each, kept (solved by some samples, not
    all), never solved, always solved."""
    never, always = counts.count(0), counts.count(samples)
    kept = len(counts) - never - always
    return {"prompts": len(counts), "samples": samples, "kept": kept, "never": never, "always": always}
