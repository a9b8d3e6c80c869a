"""`curate influence`: the CLI (flags, YAML job, --set) gives the same parquet as `score_samples`, resumes
finished parts, reports per-column stats, and under `torchrun --nproc-per-node 2` (gloo) merges the same
table as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from helpers import small_config
from mobilellm_r1.cli import main
from mobilellm_r1.curation.influence_job import load_job
from mobilellm_r1.curation.influence_run import Checkpoint, score_samples
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.tokenizer import Tokenizer, llama3_special_tokens
from mobilellm_r1.typed_config import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")
SETTINGS = {"seq_len": 24, "batch_size": 3, "chunk_size": 4, "subset": "last:1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as in the torchrun workers (OMP_NUM_THREADS=1): bit-identical sums (module
    scope, autouse: set before the module's reference run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny checkpoints (with a byte-level tokenizer whose ids fit the 1,000-token model), 10
    samples in two files (3 chunks of 4) and two probing sets."""
    root = tmp_path_factory.mktemp("influence_cli")
    tok = Tokenizer({bytes([i]): i for i in range(256)}, llama3_special_tokens(256), name_or_path="bytes")
    ckpts = [save_pretrained(build_model(small_config(), seed=t), tok, root / f"ckpt{t}") for t in (1, 2)]
    words = ["alpha", "beta", "x + y = 3", "def f():", "return 2", "sum", "1 + 1 = 2"]
    rows = [
        {
            "id": f"s{i}",
            "source": f"src{i % 2}",
            "text": " ".join(words[(i * k) % 7] for k in range(1, 3 + i % 4)),
        }
        for i in range(10)
    ]
    samples = [write_jsonl(root / "a.jsonl", rows[:6]), write_jsonl(root / "b.jsonl", rows[6:])]
    probes = {
        "math": write_jsonl(root / "math.jsonl", [{"text": f"{i} + {i} = {2 * i}"} for i in range(4)]),
        "code": write_jsonl(root / "code.jsonl", [{"text": "def add(a, b):\n    return a + b"}]),
    }
    checkpoints = [Checkpoint("t1", 100, str(ckpts[0])), Checkpoint("t2", 300, str(ckpts[1]))]
    reference = score_samples(
        [str(p) for p in samples],
        root / "reference",
        checkpoints,
        {k: str(v) for k, v in probes.items()},
        tok,
        **SETTINGS,
    )
    argv = [
        "--samples",
        *map(str, samples),
        "--probe",
        f"math={probes['math']}",
        "--probe",
        f"code={probes['code']}",
    ]
    argv += ["--checkpoint", f"t1:100:{ckpts[0]}", "--checkpoint", f"t2:300:{ckpts[1]}", "--device", "cpu"]
    argv += ["--seq-len", "24", "--batch-size", "3", "--chunk-size", "4", "--subset", "last:1"]
    return {
        "root": root,
        "argv": argv,
        "table": pq.read_table(reference["output"]),
        "probes": probes,
        "ckpts": ckpts,
    }


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], progress: str | None = None) -> dict:
    """The command's stdout JSON report; ``progress``: text its stderr progress display must show."""
    assert main(["curate", "influence", *argv]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert progress is None or progress in captured.err, captured.err
    return json.loads(captured.out)


def test_flags_equal_score_samples_and_resume(inputs: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    first = run_cli(
        [*inputs["argv"], "--out", str(out), "--max-chunks", "1"], capsys, "probe gradients @t2 (2/2)"
    )
    assert first["output"] is None and first["computed"] == [0] and first["chunks"] == 3
    shown = "influence: score samples x 2 checkpoints: 100%"  # part 0 exists: 2 chunks x 2 checkpoints left
    report = run_cli([*inputs["argv"], "--out", str(out)], capsys, progress=shown)
    assert report["skipped"] == [0] and report["computed"] == [1, 2] and report["samples_scored"] == 6
    table = pq.read_table(report["output"])
    assert table.equals(inputs["table"]) and report["rows"] == 10 and report["world_size"] == 1
    assert table.column_names == [
        "id",
        "source",
        "tokens",
        "math@t1",
        "math@t2",
        "code@t1",
        "code@t2",
        "joint",
    ]
    joint = torch.tensor(table["joint"].to_pylist(), dtype=torch.float64)
    assert report["columns"]["joint"]["mean"] == pytest.approx(float(joint.mean()))
    assert report["columns"]["joint"]["frac_positive"] == pytest.approx(float((joint > 0).double().mean()))
    again = run_cli([*inputs["argv"], "--out", str(out)], capsys)  # all parts done: nothing recomputed
    assert (
        again["computed"] == []
        and again["skipped"] == [0, 1, 2]
        and pq.read_table(again["output"]).equals(table)
    )


def test_yaml_job_with_overrides(inputs: dict, tmp_path: Path, capsys) -> None:
    root = inputs["root"]
    job = {
        "samples": [str(root / "a.jsonl"), str(root / "b.jsonl")],
        "probes": {k: str(v) for k, v in inputs["probes"].items()},
        "checkpoints": [
            {"name": "t1", "step": 100, "model": str(inputs["ckpts"][0])},
            {"name": "t2", "step": 300, "model": str(inputs["ckpts"][1])},
        ],
        "out": str(tmp_path / "never"),
        **SETTINGS,
        "seq_len": 512,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    report = run_cli(["--config", str(path), "--out", str(tmp_path / "yaml"), "--set", "seq_len=24"], capsys)
    assert pq.read_table(report["output"]).equals(inputs["table"]) and not (tmp_path / "never").exists()
    meta = json.loads((tmp_path / "yaml" / "meta.json").read_text())
    assert meta["config"]["seq_len"] == 24 and meta["config"]["subset"] == "last:1"
    shipped = load_job(Path(SRC) / "mobilellm_r1/recipes/curation/influence_synthetic.yaml")
    assert set(shipped.probes) == {"code", "math", "knowledge"} and shipped.scoring_config().seq_len == 256


def test_bad_jobs_name_the_field(inputs: dict, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="command line: a job needs samples, probes and checkpoints"):
        load_job(None, {"samples": ["x.jsonl"], "probes": {}, "checkpoints": [], "out": "o"})
    with pytest.raises(ConfigError, match=r"command line: checkpoints\.0\.step: expected int"):
        load_job(
            None,
            {
                "samples": ["x"],
                "probes": {"m": "p"},
                "checkpoints": [{"name": "t", "step": "x", "model": "m"}],
                "out": "o",
            },
        )
    base = [*inputs["argv"], "--out", str(tmp_path / "o")]
    assert main(["curate", "influence", *base, "--set", "batch_sise=2"]) == 1
    assert "command line: unknown field(s) batch_sise" in capsys.readouterr().err
    assert main(["curate", "influence", *base, "--checkpoint", "t3:late:dir"]) == 1
    assert "expected NAME:STEP:MODEL_DIR[:ADAM_STATE]" in capsys.readouterr().err
    assert main(["curate", "influence", *base, "--set", "preconditioner=newton"]) == 1
    assert "preconditioner: expected one of ['identity', 'adam', 'datainf']" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(inputs: dict, tmp_path: Path) -> None:
    out = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "mobilellm_r1.cli", "curate", "influence", *inputs["argv"], "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)  # rank 0 only
    assert report["world_size"] == 2 and report["computed"] == [0, 1, 2] and report["samples_scored"] == 10
    assert pq.read_table(out / "influence.parquet").equals(inputs["table"])
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
