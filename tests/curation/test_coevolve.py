"""Data-model co-evolution (Eq. 6-7) end to end on a tiny model: Eq. 6 keeps exactly the positive samples,
stage 2 starts from stage 1's model, finished stages are skipped on a rerun, the threshold stops the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import mobilellm_r1.curation.coevolve as coevolve
from helpers import small_config
from mobilellm_r1.cli import main
from mobilellm_r1.data.recipes import load_mixture
from mobilellm_r1.data.records import read_records
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import load_pretrained, save_pretrained
from mobilellm_r1.tokenizer import Tokenizer

TEXTS = {
    "math": lambda i: f"{i} + {i + 3} = {2 * i + 3}. Then {i} * 2 = {2 * i}.",
    "code": lambda i: f"def add_{i}(x):\n    return x + {i}\n",
    "noise": lambda i: "噪声ÿ数据" * (1 + i % 4) + f" {i}",  # bytes the probes never use
}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coevolve")
    tok = Tokenizer({bytes([b]): b for b in range(256)}, name_or_path="bytes")  # 512 ids: fast on CPU
    cfg = small_config(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=[tok.eos_id])
    save_pretrained(build_model(cfg, seed=0), tok, root / "base")
    for name, text in TEXTS.items():
        rows = [{"id": f"{name}-{i}", "source": name, "text": text(i)} for i in range(10)]
        if name == "math":  # a row without id / source: both filled in when kept
            rows[0] = {"text": text(0)}
        if name == "code":  # the pool entry names the source
            rows[1]["source"] = "legacy"
        write_jsonl(root / "pool" / f"{name}.jsonl", rows)
    write_jsonl(root / "probe" / "math.jsonl", [{"text": f"{i} + {i} = {2 * i}."} for i in range(4)])
    write_jsonl(
        root / "probe" / "code.jsonl", [{"text": f"def f(x):\n    return x * {i}\n"} for i in range(4)]
    )
    return root


def write_config(root: Path, out: Path, **extra: object) -> Path:
    config = {
        "name": "tiny",
        "pool": {g: [str(root / "pool" / f"{g}.jsonl")] for g in TEXTS},
        "probes": {c: str(root / "probe" / f"{c}.jsonl") for c in ("math", "code")},
        "model": str(root / "base"),
        "train": {
            "recipe": "train/tiny_cpu",
            "overrides": [
                "steps=3",
                "data.micro_batch=2",
                "optim.warmup_steps=1",
                "checkpoint_every=0",
                "eval_every=2",  # its "step N: nll/..." lines must not reach stdout (the JSON report)
                f"eval_files=[{json.dumps(str(root / 'probe' / 'math.jsonl'))}]",
                "eval_docs=2",
                "precision=fp32",
                "loss_chunk_tokens=128",
            ],
        },
        "influence": {"seq_len": 64, "batch_size": 8, "chunk_size": 16, "subset": "last:1"},
        "seq_len": 64,
        "max_stages": 2,
        "min_positive_fraction": 0.0,
        "histogram_bins": 8,
        "out_dir": str(out),
        "device": "cpu",
        **extra,
    }
    path = root / f"{out.name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run_cli(config: Path, capsys: pytest.CaptureFixture) -> dict:
    assert main(["curate", "coevolve", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_stages_filter_init_and_resume(
    setup: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = setup / "run"
    config = write_config(setup, out)
    report = run_cli(config, capsys)
    assert [s["trained"] for s in report["stages"]] == [True, True, False]  # stage 3: final histogram
    assert report["stop"] == "max_stages (2) reached" and report["resumed_stages"] == []
    assert report["final_model"] == str(out / "stage_2" / "train" / "final")
    s1, s2, s3 = (json.loads((out / f"stage_{t}" / "summary.json").read_text()) for t in (1, 2, 3))

    # Eq. 6: the kept files hold exactly the samples scored > 0, and they are the next stage's pool
    for s in (s1, s2):
        stage = out / f"stage_{s['stage']}"
        table = pq.read_table(stage / "influence" / "influence.parquet").to_pylist()
        positive = {r["id"] for r in table if r["joint"] > 0}
        kept = {g: [r.row for r in read_records(stage / "data" / f"{g}.jsonl")] for g in TEXTS}
        assert {r["id"] for rows in kept.values() for r in rows} == positive
        assert s["positive"] == len(positive) > 0
        assert all(r["source"] == g for g, rows in kept.items() for r in rows)
        assert s["kept"] == {g: len(rows) for g, rows in kept.items()}
        assert s["positive_fraction"] == pytest.approx(len(positive) / s["samples"])
        assert sum(s["histogram"]["counts"]) == s["samples"] and len(s["histogram"]["edges"]) == 9
    assert s1["samples"] == 30 and s2["samples"] == s1["positive"] and s3["samples"] == s2["positive"]
    assert s2["pool"] == {g: n for g, n in s1["kept"].items() if n}

    # Eq. 5 mixture of the kept samples, read by the trainer (its shards under the stage folder)
    recipe = load_mixture(s1["recipe"])
    weights = {s.name: s.weight for s in recipe.sources}
    assert weights == pytest.approx(s1["mix"]["weights"] | {g: 0.0 for g in TEXTS if not s1["kept"][g]})
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all((out / "stage_1" / "shards" / s.name / "meta.json").exists() for s in recipe.active)

    # Eq. 7: stage 2 scores and trains from stage 1's model; each stage changes the weights
    final1 = str(out / "stage_1" / "train" / "final")
    assert s2["model"] == final1 and s2["train"]["config"]["model"]["init_from"] == final1
    meta = json.loads((out / "stage_2" / "influence" / "meta.json").read_text())
    assert meta["checkpoints"][0]["model"] == final1
    m0, m1, m2 = (load_pretrained(p)[0] for p in (setup / "base", final1, report["final_model"]))
    w0, w1, w2 = (torch.nn.utils.parameters_to_vector(m.parameters()) for m in (m0, m1, m2))
    assert not torch.equal(w0, w1) and not torch.equal(w1, w2)

    # Fig. 5 outputs
    assert (out / "histograms.png").read_bytes()[:4] == b"\x89PNG"
    assert set(json.loads((out / "histograms.json").read_text())) == {"1", "2", "3"}

    # Resume: finished stages are skipped without scoring or training anything
    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(coevolve, "InfluenceScorer", refuse)
    again = run_cli(config, capsys)
    assert again["resumed_stages"] == [1, 2, 3] and again["stages"] == report["stages"]
    # ... and a stage cut short before its summary resumes from what it wrote (no rescoring, no retraining)
    monkeypatch.undo()
    parts = sorted((out / "stage_2" / "influence" / "parts").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    for t in (2, 3):
        (out / f"stage_{t}" / "summary.json").unlink()
    resumed = run_cli(config, capsys)
    assert resumed["resumed_stages"] == [1] and [p.stat().st_mtime_ns for p in parts] == stamps
    assert json.loads((out / "stage_2" / "summary.json").read_text())["train"]["skipped"] is True
    assert [s["kept"] for s in resumed["stages"]] == [s["kept"] for s in report["stages"]]
    # another config in the same directory is refused
    assert main(["curate", "coevolve", "--config", str(config), "--set", "seq_len=32"]) == 1
    assert "another config" in capsys.readouterr().err


def test_threshold_stops_before_training(setup: Path, capsys: pytest.CaptureFixture) -> None:
    out = setup / "strict"
    report = run_cli(write_config(setup, out, min_positive_fraction=0.99, column="math"), capsys)
    (stage,) = report["stages"]
    assert not stage["trained"] and report["stop"].startswith("positive fraction")
    assert report["final_model"] == str(setup / "base")
    assert not (out / "stage_1" / "data").exists() and not (out / "stage_1" / "train").exists()


def test_config_errors(setup: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(setup, setup / "bad", influence={"preconditioner": "adam"})
    assert main(["curate", "coevolve", "--config", str(config)]) == 1
    assert "not adam" in capsys.readouterr().err
    config = write_config(setup, setup / "bad1", column="chess")
    assert main(["curate", "coevolve", "--config", str(config)]) == 1
    assert "column 'chess': use joint or a capability of probes ['math', 'code']" in capsys.readouterr().err
