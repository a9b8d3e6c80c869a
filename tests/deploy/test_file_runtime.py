"""FileGenerator (generation over an exported file's runtime), `deploy.load`, the export driver's
checks and the `export` command, with a PyTorch stand-in for the runtime (the formats' own
runtimes are tested in test_pte.py / test_gguf.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from helpers import TorchRuntime, small_config
from mobilellm_r1.atomic import atomic_output
from mobilellm_r1.cli import main
from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.export import check_context, export_checkpoint
from mobilellm_r1.deploy.file_runtime import FileGenerator
from mobilellm_r1.deploy.formats import FORMATS, MissingPackageError, format_of_path
from mobilellm_r1.deploy.formats.contract import (
    ExportError,
    ExportOptions,
    check_group_size,
    default_group_size,
    read_metadata,
)
from mobilellm_r1.deploy.load import load_for_generation
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.model import Transformer


@pytest.fixture(scope="module")
def model(tokenizer) -> Transformer:
    cfg = small_config(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id, eos_token_id=[])
    return build_model(cfg, seed=3).eval()


@pytest.fixture()
def runtime(model, tokenizer) -> TorchRuntime:
    return TorchRuntime(model, tokenizer, model.config.max_position_embeddings)


def texts(completions) -> list[list[tuple[list[int], str | None, str]]]:
    return [[(c.token_ids, c.text, c.finish_reason) for c in row] for row in completions]


def test_greedy_matches_the_batched_generator(model, tokenizer, runtime):
    prompts = ["The cat sat on", "Numbers: 1 2 3 4", "A"]
    params = SamplingParams(max_new_tokens=12, n=2)
    ours = Generator(model, tokenizer).generate(prompts, params)
    theirs = FileGenerator(runtime).generate(prompts, params)
    assert texts(theirs) == texts(ours)
    # each prompt is prefilled once (from position 0); both samples decode on from its end
    lengths = [len(tokenizer.encode(p, bos=True)) for p in prompts]
    assert [n for start, n in runtime.calls if start == 0] == lengths
    assert runtime.calls.count((lengths[-1], 1)) == 2  # "A": no other prompt decodes at slot 2


def test_stop_ids_stop_strings_and_streaming_follow_the_generator_rules(model, tokenizer, runtime):
    ids = tokenizer.encode("Once upon a time", bos=True)
    free = Generator(model, tokenizer).generate([ids], SamplingParams(max_new_tokens=16))[0][0]
    stop_tok = free.token_ids[5]
    stop_text = tokenizer.decode(free.token_ids[3:5])
    for params in (
        SamplingParams(max_new_tokens=16, stop_token_ids=(stop_tok,)),
        SamplingParams(max_new_tokens=16, stop_strings=(stop_text,)),
    ):
        streamed: list[int] = []
        got = FileGenerator(runtime).generate(
            [ids], params, stream=lambda i, j, new, out=streamed: out.extend(new)
        )
        want = Generator(model, tokenizer).generate([ids], params)
        assert texts(got) == texts(want)
        assert got[0][0].finish_reason == "stop"
        assert streamed == got[0][0].token_ids


def test_sampling_is_seeded_and_top_k_1_is_greedy(runtime, tokenizer):
    ids = tokenizer.encode("Hello", bos=True)
    sample = SamplingParams(max_new_tokens=10, temperature=1.0, n=3, seed=7)
    gen = FileGenerator(runtime)
    first, again = gen.generate([ids], sample), gen.generate([ids], sample)
    assert texts(first) == texts(again)
    assert len({tuple(c.token_ids) for c in first[0]}) > 1  # three different samples
    greedy = gen.generate([ids], SamplingParams(max_new_tokens=10))
    top1 = gen.generate([ids], dataclasses.replace(sample, top_k=1, n=1))
    assert texts(top1) == texts(greedy)


def test_seeded_sampling_matches_the_batched_generator(model, tokenizer, runtime):
    """Counter-based noise per (seed, prompt, sample, token): the same samples as the batched
    Generator, whose rows share one batch."""
    prompts = ["Hello", "Numbers: 1 2 3 4"]
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.95, n=2, seed=21)
    assert texts(FileGenerator(runtime).generate(prompts, params)) == texts(
        Generator(model, tokenizer).generate(prompts, params)
    )


def test_a_request_past_the_file_context_is_refused(model, tokenizer):
    short = TorchRuntime(model, tokenizer, 16)
    with pytest.raises(
        ValueError, match=r"exceeds the context of torch-runtime \(16; export it with a larger"
    ):
        FileGenerator(short).generate([list(range(1, 10))], SamplingParams(max_new_tokens=8))


def test_group_size_defaults_and_errors():
    assert default_group_size(preset("140m")) == 32  # 576 = 4.5 x 128
    assert default_group_size(preset("360m")) == 128
    assert default_group_size(preset("950m")) == 128
    with pytest.raises(ExportError, match="--group-size 128 does not divide the width 576 of q/k/v"):
        check_group_size(preset("140m"), 128)
    with pytest.raises(ExportError, match=r"--max-context 8192 must be between 1 and .*4096"):
        check_context(preset("tiny"), ExportOptions("none", max_context=8192))


def test_metadata_of_a_foreign_file_is_refused():
    with pytest.raises(ExportError, match=r"x\.gguf: not written by `mobilellm-r1 export`"):
        read_metadata({"general.name": "llama"}, "x.gguf")


def test_format_of_path_and_missing_packages(monkeypatch):
    assert format_of_path("a/b.PTE") is FORMATS["pte"] and format_of_path("m.gguf") is FORMATS["gguf"]
    assert format_of_path("runs/final") is None
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(
        MissingPackageError, match=r"needs gguf, llama_cpp: pip install 'mobilellm-r1\[deploy\]'"
    ):
        FORMATS["gguf"].load()


def test_export_refusals_name_the_option_and_write_nothing(tmp_path: Path):
    out = tmp_path / "m.pte"
    with pytest.raises(ExportError, match=r"a gguf file must end in \.gguf"):
        export_checkpoint(tmp_path, "gguf", out, ExportOptions("f16"))
    with pytest.raises(ExportError, match="--quant 'q4_0': pte takes none, 8da4w"):
        export_checkpoint(tmp_path, "pte", out, ExportOptions("q4_0"))
    with pytest.raises(ExportError, match="unknown format 'onnx'"):
        export_checkpoint(tmp_path, "onnx", out, ExportOptions("none"))
    assert list(tmp_path.iterdir()) == []


def test_export_command_errors_are_one_line(tmp_path: Path, capsys):
    code = main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "m.bin")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mobilellm-r1: error: --out {tmp_path / 'm.bin'}: give --format, or a file name ending in .pte or .gguf"
    ]
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "out.gguf"
    with pytest.raises(RuntimeError, match="boom"), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_load_for_generation_checks_what_applies(tmp_path: Path):
    with pytest.raises(
        ValueError, match=r"--dtype applies to checkpoint directories; .*m\.gguf is a gguf file"
    ):
        load_for_generation(tmp_path / "m.gguf", dtype="bfloat16")
    with pytest.raises(FileNotFoundError, match="pte file not found"):
        load_for_generation(tmp_path / "m.pte", device="cpu")
