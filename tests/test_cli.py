"""Tests of the `mobilellm-r1` command line (in-process via `main`, one subprocess `--help`)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mobilellm_r1 import cli
from mobilellm_r1.cli import COMMANDS, main, quiet_progress_when_logged
from mobilellm_r1.deploy.commands import StreamPrinter, build_prompt_ids
from mobilellm_r1.model.config import PRESETS
from mobilellm_r1.tokenizer import load_tokenizer

SRC = Path(__file__).resolve().parents[1] / "src"
STATS_RE = re.compile(r"^\[\d+ tokens in [\d.]+ s, [\d.]+ tok/s; 1 sample\(s\), prompt \d+ tokens\]$")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny checkpoint written by `init`."""
    out = tmp_path_factory.mktemp("cli") / "tiny"
    assert main(["init", "--preset", "tiny", "--out", str(out), "--seed", "0"]) == 0
    return out


def _generate(capsys: pytest.CaptureFixture[str], ckpt: Path, *extra: str) -> tuple[str, str]:
    """Run `generate` (greedy, 8 tokens) and return (stdout, stderr)."""
    args = ["generate", "--model", str(ckpt), "--max-new-tokens", "8", "--device", "cpu", *extra]
    assert main(args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def _assert_one_line_error(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mobilellm-r1: error: ") and needle in lines[0]
    assert "Traceback" not in err


# --------------------------------------------------------------------------- help / registry
def test_help_subprocess_is_quick_and_lists_commands() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "mobilellm_r1.cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("info", "init", "generate"):
        assert name in proc.stdout


@pytest.mark.parametrize("command", ["info", "init", "generate"])
def test_subcommand_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert command in COMMANDS
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"mobilellm-r1 {command}" in out


def test_missing_subcommand_and_bad_args_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["info"]) == 2  # --preset is required
    assert main(["info", "--preset", "140m", "--context", "0"]) == 2
    assert main(["generate", "--model", "x", "--prompt", "y", "--n", "zero"]) == 2
    assert "usage: mobilellm-r1" in capsys.readouterr().err


# --------------------------------------------------------------------------- info
@pytest.mark.parametrize(
    ("name", "total"), [("140m", 140_248_512), ("360m", 359_431_168), ("950m", 949_685_760)]
)
def test_info_json_param_counts(name: str, total: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", name, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["preset"] == name and record["total_params"] == total
    assert record["non_embedding_params"] == total - 128_256 * record["config"]["hidden_size"]
    assert record["flops_per_token_train"] == 3 * record["flops_per_token_forward"]
    for key in ("kv_cache_bytes_per_token_bf16", "context", "config"):
        assert key in record
    assert record["context"] == record["config"]["max_position_embeddings"] == 4096


def test_info_all_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "all", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in records] == list(PRESETS)
    assert main(["info", "--preset", "all"]) == 0
    table = capsys.readouterr().out
    assert "140,248,512" in table and "949,685,760" in table and "num_key_value_heads" in table


def test_info_long_context_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "140m", "--long-context", "--context", "8192", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"]["max_position_embeddings"] == 32_768
    assert record["config"]["rope_theta"] == 8_000_000.0 and record["context"] == 8192
    assert record["kv_cache_bytes_per_token_bf16"] == 2 * 15 * 3 * 64 * 2
    assert main(["info", "--preset", "140m", "--context", "8192"]) == 1
    _assert_one_line_error(capsys.readouterr().err, "--long-context")


def test_an_error_under_an_open_progress_bar_gets_its_own_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that fails with its bar open (GRPO at step 0): the error is not glued to the bar."""
    from tqdm import tqdm

    def run(args: argparse.Namespace) -> int:
        bar = tqdm(total=30, desc="train", file=sys.stderr, mininterval=0)
        bar.update(0)  # open while the error propagates (the traceback holds it)
        raise ValueError("q is torch.bfloat16 but the pools are torch.float32")

    parser = argparse.ArgumentParser()
    parser.add_argument("--debug", action="store_true")
    parser.set_defaults(run=run)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert main([]) == 1
    segments = [s.strip() for s in re.split(r"[\r\n]", capsys.readouterr().err)]
    assert "mobilellm-r1: error: q is torch.bfloat16 but the pools are torch.float32" in segments


def test_info_unknown_preset_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "7b"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line_error(captured.err, "unknown preset '7b'")


# --------------------------------------------------------------------------- init
def test_init_writes_checkpoint_and_refuses_non_empty(
    tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (tiny_ckpt / "config.json").is_file() and (tiny_ckpt / "model.safetensors").is_file()
    assert (tiny_ckpt / "tokenizer.json").is_file()
    assert main(["init", "--preset", "tiny", "--out", str(tiny_ckpt)]) == 1
    _assert_one_line_error(capsys.readouterr().err, "--force")


def test_init_force_replaces_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "junk.txt").write_text("old")
    assert main(["init", "--preset", "tiny", "--out", str(out), "--dtype", "bfloat16", "--force"]) == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and "17,204,352 parameters" in stdout
    assert not (out / "junk.txt").exists()
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


# --------------------------------------------------------------------------- generate
def test_generate_plain_greedy_is_deterministic(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out1, err1 = _generate(capsys, tiny_ckpt, "--prompt", "Hello, world")
    out2, _ = _generate(capsys, tiny_ckpt, "--prompt", "Hello, world", "--no-stream")
    assert out1 == out2 and out1.endswith("\n") and out1.strip()
    assert STATS_RE.match(err1.strip()), err1
    assert err1.strip().startswith("[8 tokens")  # random weights never emit a stop token this early


def test_generate_chat_math_is_deterministic(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--prompt", "What is 2 + 2?", "--chat", "--system", "math")
    out1, _ = _generate(capsys, tiny_ckpt, *args)
    out2, _ = _generate(capsys, tiny_ckpt, "--prompt", "What is 2 + 2?", "--system", "math")  # implies --chat
    assert out1 == out2 and out1.strip()


def test_generate_stdin_prompt(
    tiny_ckpt: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello, world\n"))
    from_stdin, _ = _generate(capsys, tiny_ckpt, "--prompt", "-")
    direct, _ = _generate(capsys, tiny_ckpt, "--prompt", "Hello, world")
    assert from_stdin == direct


def test_generate_n_samples_have_headers(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--prompt", "Hi", "--n", "2", "--temperature", "1.0", "--top-k", "50", "--seed", "3")
    out1, err = _generate(capsys, tiny_ckpt, *args)
    out2, _ = _generate(capsys, tiny_ckpt, *args)
    assert out1 == out2
    assert "=== sample 1/2 (8 tokens" in out1 and "=== sample 2/2 (8 tokens" in out1
    assert "2 sample(s)" in err


def test_generate_missing_dir_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "does-not-exist"
    assert main(["generate", "--model", str(missing), "--prompt", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line_error(captured.err, str(missing))
    with pytest.raises(FileNotFoundError):
        main(["--debug", "generate", "--model", str(missing), "--prompt", "x"])


def test_generate_over_context_is_one_line_error(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", str(tiny_ckpt), "--prompt", "x", "--max-new-tokens", "99999"]) == 1
    _assert_one_line_error(capsys.readouterr().err, "exceeds the model context")


# --------------------------------------------------------------------------- streaming helpers
def test_build_prompt_ids() -> None:
    tok = load_tokenizer()
    assert build_prompt_ids(tok, "Hi", chat=False, system=None) == [tok.bos_id, *tok.encode("Hi")]
    chat = build_prompt_ids(tok, "Hi", chat=False, system="math")
    text = tok.decode(chat)
    assert chat[0] == tok.bos_id and "\\boxed{}" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_stream_printer_stops_at_stop_token_and_string(capsys: pytest.CaptureFixture[str]) -> None:
    tok = load_tokenizer()
    printer = StreamPrinter(tok, stop_ids=[tok.eot_id], stop_strings=["END"])
    ids = tok.encode("one two EN")
    printer(0, 0, ids)
    assert capsys.readouterr().out == "one two "  # "EN" may begin "END": held back
    printer(0, 0, [*tok.encode("D three"), tok.eot_id, *tok.encode(" four")])
    printer.finish("one two ")
    assert capsys.readouterr().out == "\n"

    printer = StreamPrinter(tok, stop_ids=[tok.eot_id], stop_strings=[])
    printer(0, 0, [*tok.encode("héllo"), tok.eot_id, *tok.encode(" junk")])
    printer.finish("héllo")
    assert capsys.readouterr().out == "héllo\n"


# --------------------------------------------------------------------------- input faults (issue 17, #9)
def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> str:
    """`argv` is refused by argparse (exit 2) with `needle` in the message, before any work."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: mobilellm-r1" in err and needle in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--recipe", "train/tiny_cpu"],
        ["curate", "influence", "--config", "curation/influence_synthetic"],
        ["curate", "coevolve", "--config", "curation/coevolve_synthetic"],
        ["generate", "--model", "missing-dir", "--prompt", "x"],
        ["eval", "--model", "missing-dir", "--tasks", "gsm8k"],
    ],
)
def test_device_cuda_without_cuda_is_a_usage_error(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # the shipped configs write under runs/: nothing may appear
    _usage_error(capsys, [*argv, "--device", "cuda"], "--device: cuda: CUDA is not available on this machine")
    assert list(tmp_path.iterdir()) == []
    _usage_error(capsys, [*argv, "--device", "gpu"], "not a device name")


def test_resolve_device_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mobilellm_r1.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"^device cuda:1: CUDA is not available on this machine"):
        resolve_device("cuda:1", "device")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["eval", "--model", "missing-dir", "--tasks", "gsm8k", "--limit", "-1"],
            "--limit: must be >= 1, got -1",
        ),
        (
            ["eval", "--model", "missing-dir", "--tasks", "gsm8k", "--limit", "0"],
            "--limit: must be >= 1, got 0",
        ),
        (["eval", "--model", "missing-dir", "--tasks", "gsm8k", "--n", "0"], "--n: must be >= 1"),
        (["eval", "--model", "missing-dir", "--tasks", "gsm8kk"], "unknown task 'gsm8kk'"),
        (["eval", "--model", "missing-dir", "--tasks", "gsm8k", "--temperature", "nan"], "finite"),
        (
            ["generate", "--model", "missing-dir", "--prompt", "x", "--temperature", "-1"],
            "--temperature: must be >= 0",
        ),
        (
            ["generate", "--model", "missing-dir", "--prompt", "x", "--top-p", "1.5"],
            "--top-p: must be in (0, 1]",
        ),
        (
            ["generate", "--model", "missing-dir", "--prompt", "x", "--top-p", "0"],
            "--top-p: must be in (0, 1]",
        ),
        (["generate", "--model", "missing-dir", "--prompt", "x", "--top-k", "-3"], "--top-k: must be >= 0"),
    ],
)
def test_bad_numbers_and_tasks_are_usage_errors_before_loading(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model directory does not exist: loading it would fail with exit 1, so exit 2 means the
    # value was refused while parsing, before any model was loaded.
    _usage_error(capsys, argv, needle)


def test_suites_still_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--model", str(tmp_path / "missing"), "--tasks", "base,gsm8k", "--limit", "1"]
    assert main([*argv, "--device", "cpu"]) == 1  # parsed; fails at loading the missing model
    _assert_one_line_error(capsys.readouterr().err, "missing")


def test_set_error_names_the_set_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", "train/tiny_cpu", "--set", "steps=abc"]) == 1
    _assert_one_line_error(
        capsys.readouterr().err, "steps: expected int, got 'abc' (the value comes from --set steps=abc"
    )
    assert main(["train", "--recipe", "train/tiny_cpu", "--set", "optim.lr=.inf"]) == 1
    _assert_one_line_error(capsys.readouterr().err, "optim.lr: expected a finite number, got inf")


def test_coevolve_failure_leaves_no_partial_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "co"
    argv = ["curate", "coevolve", "--config", "curation/coevolve_synthetic", "--device", "cpu"]
    argv += ["--set", f"out_dir={out}", "--set", f"model={tmp_path / 'no-model'}"]
    argv += ["--set", f"pool={{a: [{tmp_path / 'no-pool.jsonl'}]}}"]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()


def _poisoned_copy(ckpt: Path, out: Path) -> str:
    """A copy of `ckpt` with one NaN in one weight; returns that weight's name."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(ckpt, out)
    tensors = load_file(out / "model.safetensors")
    name = next(n for n in sorted(tensors) if n.endswith("layers.1.feed_forward.down_proj.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return name


def test_generate_refuses_nan_weights(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nan"
    name = _poisoned_copy(tiny_ckpt, bad)
    assert main(["generate", "--model", str(bad), "--prompt", "Hello", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err, "non-finite value(s) (NaN/inf)")
    assert name.removeprefix("model.") in err


def test_generate_chat_template_loop_fails_fast(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil
    import time

    hostile = tmp_path / "loop"
    shutil.copytree(tiny_ckpt, hostile)
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (hostile / "chat_template.jinja").write_text(loop)
    start = time.perf_counter()
    assert main(["generate", "--model", str(hostile), "--prompt", "x", "--chat", "--device", "cpu"]) == 1
    assert time.perf_counter() - start < 10
    _assert_one_line_error(
        capsys.readouterr().err, "chat template failed: over 1,000,000 lines of template code"
    )


def test_progress_bars_redraw_rarely_into_a_log(monkeypatch) -> None:
    """stderr to a file (a scheduler's log): tqdm redraws every 30 s, unless the user chose."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    quiet_progress_when_logged()
    assert "TQDM_MININTERVAL" not in os.environ  # a terminal keeps tqdm's live bars
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet_progress_when_logged()
    assert os.environ["TQDM_MININTERVAL"] == "30"
    # tqdm reads it when imported: the CLI sets it before any command imports tqdm
    env = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    probe = (
        "from mobilellm_r1.cli import quiet_progress_when_logged; quiet_progress_when_logged(); "
        "import io, tqdm; print(tqdm.tqdm(range(3), file=io.StringIO()).mininterval)"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "30.0"
    monkeypatch.setenv("TQDM_MININTERVAL", "2")
    quiet_progress_when_logged()
    assert os.environ["TQDM_MININTERVAL"] == "2"
