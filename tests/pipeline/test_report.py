"""report.html: every section, numbers in tables (images off), run text escaped."""

from __future__ import annotations

import html.parser
import json

from mobilellm_r1.pipeline.report.collect import prompt_filter
from mobilellm_r1.pipeline.report.page import SECTIONS, render

HOSTILE = "<script>alert(1)</script>"


def _stage(name: str, section: dict, **extra) -> dict:
    return {
        "name": name,
        "title": name.title(),
        "command": f"mobilellm-r1 {name}",
        "state": "done",
        "wall_s": 12.5,
        "device": "CPU, 2 cores",
        "attempts": 1,
        "section": section,
        **extra,
    }


def _report() -> dict:
    train = {
        "kind": "train",
        "tokens": 4096,
        "steps": 4,
        "curves": {"loss": [[1, 11.8], [2, 9.0], [3, 7.5], [4, 6.25]]},
        "heldout": [{"step": 4, "nll/math": 5.5, "rankme": 3.25}],
        "final_model": "pretrain/final",
    }
    grpo = {
        "kind": "train",
        "tokens": 100,
        "steps": 3,
        "curves": {"reward": [[1, 0.1], [2, 0.2], [3, 0.375]]},
        "heldout": [],
        "prompt_filter": {"prompts": 96, "samples": 8, "kept": 45, "never": 51, "always": 0},
    }
    return {
        "recipe": "t",
        "description": HOSTILE,
        "run_dir": "runs/t",
        "command": "mobilellm-r1 run e2e/t",
        "written": "2026-12-04",
        "versions": {"mobilellm_r1": "0.1.0", "torch": "2.13", "python": "3.11", "platform": "linux"},
        "recipe_text": f"name: t  # {HOSTILE}",
        "stages": [
            _stage("pretrain", train),
            _stage("grpo", grpo),
            _stage("mix", {"kind": "mixture", "weights": {"math": 0.625, "noise": 0.375}, "rho": {}}),
            _stage(
                "influence",
                {
                    "kind": "influence",
                    "bin_edges": [-1.0, 0.0, 1.0],
                    "sources": {
                        "math": {"samples": 3, "mean": 0.5, "positive_fraction": 0.75, "counts": [1, 2]}
                    },
                },
            ),
            _stage(
                "midtrain",
                {
                    "kind": "coevolve",
                    "stages": [
                        {
                            "stage": 1,
                            "pool": {"math": 8},
                            "positive_fraction": 0.875,
                            "tokens": 1024,
                            "kept": {"math": 7},
                            "weights": {"math": 1.0},
                            "loss": 4.5,
                            "trained": True,
                        }
                    ],
                    "curves": [],
                },
            ),
            _stage(
                "eval_sft",
                {
                    "kind": "eval",
                    "model": "m",
                    "tasks": {"gsm8k": {"pass@1": 0.4375}},
                    "skipped": {"aime25": HOSTILE},
                },
            ),
            _stage(
                "export",
                {
                    "kind": "export",
                    "file": "m.gguf",
                    "bytes": 2**21,
                    "format": "gguf",
                    "quant": "q8_0",
                    "speed": {"decode_tok_s": 321.5, "prefill_tok_s": 999.0},
                },
            ),
            {"name": "later", "title": "Later", "command": "mobilellm-r1 x", "state": "not run"},
        ],
    }


class _Page(html.parser.HTMLParser):
    """Section ids, image alt texts, script tags and the text inside table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.alts, self.scripts, self.cells, self._in_cell = [], [], 0, [], False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.alts.append(attrs.get("alt"))
        self.scripts += tag == "script"
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = self._in_cell and tag not in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self._in_cell and data.strip():
            self.cells.append(data.strip())


def test_every_section_with_its_numbers_in_tables() -> None:
    page = _Page()
    page.feed(render(_report()))
    assert page.ids == list(SECTIONS)
    for number in ("6.25", "0.375", "0.625", "0.4375", "321.5", "3.25", "4.5", "0:12", "4096", "2"):
        assert number in page.cells, number
    assert all(page.alts) and len(page.alts) >= 4  # loss, reward, mixture, influence figures


def test_grpo_prompt_filter_is_stated() -> None:
    text = " ".join(render(_report()).split())
    assert "of 96 prompts sampled 8 times each by the initial policy, 45 were kept" in text
    assert "51 never solved, 0 always solved" in text


def test_prompt_filter_counts_from_the_saved_file(tmp_path) -> None:
    path = tmp_path / "grpo_prompt_filter.json"
    path.write_text(
        json.dumps({"digest": "d", "samples": 4, "ids": list("abcde"), "solved": [0, 4, 2, 1, 0]})
    )
    assert prompt_filter(path) == {"prompts": 5, "samples": 4, "kept": 2, "never": 2, "always": 1}
    assert prompt_filter(tmp_path / "absent.json") is None


def test_text_from_the_run_is_escaped_not_run() -> None:
    text = render(_report())
    page = _Page()
    page.feed(text)
    assert page.scripts == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_run_with_nothing_finished_still_renders() -> None:
    report = _report()
    report["stages"] = [{"name": "a", "title": "A", "command": "mobilellm-r1 a", "state": "not run"}]
    page = _Page()
    page.feed(render(report))
    assert page.ids == list(SECTIONS)
