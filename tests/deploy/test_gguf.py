"""GGUF export (`deploy/formats/gguf.py`) run by stock llama.cpp (`gguf_runtime.py`).

The trained `tiny` checkpoint checks exactness (f32, f16) and llama.cpp's own tokenizer. It
predicts " " at every position after its 16 steps, so top-1 agreement on it cannot fail; the
quantized files are therefore checked on a random model (init std 0.1) with a small byte-level
BPE vocabulary, whose argmax changes from token to token and whose files export in a second.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf
import llama_cpp
import pytest
import torch
import transformers

from mobilellm_r1.data.tokenizer_train import train_bpe
from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.export import export_checkpoint
from mobilellm_r1.deploy.file_runtime import FileGenerator, FileRuntime, top1_agreement
from mobilellm_r1.deploy.formats import gguf as gguf_format
from mobilellm_r1.deploy.formats.contract import ExportError, ExportOptions
from mobilellm_r1.model import build_model
from mobilellm_r1.model.config import preset
from mobilellm_r1.model.hf import load_pretrained, save_pretrained, to_hf_config
from mobilellm_r1.model.model import Transformer
from mobilellm_r1.tokenizer import SINGLE_DIGIT_PAT_STR, Tokenizer, chat_messages, llama3_special_tokens

STEPS = 64
GREEDY = SamplingParams(max_new_tokens=STEPS, stop_token_ids=())
PROMPT = "The city of Valmiyargrad lies on the banks of the Zomolo River. It was founded in"
HELD_OUT = (
    "Mira bought 7 pencils and 12 erasers; how many items did she buy? She bought 7 + 12 = 19 items, "
    "so the answer is $\\boxed{19}$. The town of Oskerholm lies in Fendraly, on the shore of Lake "
    "Tarven, and was founded in the year 1402. def add(a, b):\n    return a + b\nIt has 48,300 "
    "residents and a harbour that freezes in the winter months."
)
QUANTS = ("q8_0", "q4_0", "q4_k_m")
# llama.cpp rounds every activation entering an f16 matmul, and the K/V cache, to float16 (unit
# roundoff 2^-11); over 4 layers and a 128k-way LM head that stays well inside bfloat16's unit
# roundoff (2^-8) relative to the largest logit, while a wrong layout or order errs by O(1).
F16_REL_TOL = 2.0**-8
# Steps where the eager top-1 leads by this much must agree exactly: 8-bit activation rounding
# inside llama.cpp's quantized dot products moves these logits by at most ~0.15 (printed), so a
# lead of 0.4 cannot flip; near-ties may, hence the agreement fraction below.
QUANT_MARGIN = 0.4
QUANT_MIN_AGREEMENT = 0.85  # teacher-forced greedy steps where llama.cpp's top-1 is eager's
# Top-1 agreement with the unquantized model on held-out text. The random model's top-2 logits
# are close (median lead ~0.2), so 4-bit weights flip many: far above chance (1/524), not high.
HELD_OUT_MIN_AGREEMENT = {"q8_0": 0.85, "q4_k_m": 0.5, "q4_0": 0.25}


class Recorder:
    """A FileRuntime that keeps every logits vector it returns."""

    def __init__(self, runtime: FileRuntime) -> None:
        self.runtime, self.logits = runtime, []
        for name in ("path", "metadata", "tokenizer", "max_context", "vocab_size", "eos_token_id"):
            setattr(self, name, getattr(runtime, name))

    def forward(self, ids: list[int], start: int) -> torch.Tensor:
        self.logits.append(self.runtime.forward(ids, start))
        return self.logits[-1]


def small_tokenizer() -> Tokenizer:
    """Byte-level BPE: the 256 bytes, a few merges, the 256 Llama-3 special tokens."""
    ranks = {bytes([i]): i for i in range(256)}
    for piece in (b"th", b"he", b"in", b" t", b"an", b"er", b"the", b" the", b"on", b"re", b" a", b"nd"):
        ranks[piece] = len(ranks)
    return Tokenizer(ranks, llama3_special_tokens(len(ranks)), name_or_path="small-bpe")


def small_config(**overrides):
    tok = small_tokenizer()
    values = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=list(tok.stop_ids))
    return preset("tiny", initializer_range=0.1, **{**values, **overrides})


def model_logits(model: Transformer, prompt: list[int], new: list[int]) -> torch.Tensor:
    """[len(new), vocab]: the model's logits before each new token."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new]))[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(new)]


def greedy(runtime: FileRuntime, model: Transformer, prompt: list[int]) -> tuple[list[int], list[int]]:
    """64 greedy tokens from the file (FileGenerator) and from the model (Generator)."""
    (file,) = FileGenerator(runtime).generate([prompt], GREEDY)[0]
    (ours,) = Generator(model).generate([prompt], GREEDY)[0]
    return file.token_ids, ours.token_ids


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def tiny(trained_tiny: Path) -> tuple[Transformer, Tokenizer]:
    return load_pretrained(trained_tiny, dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_gguf(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    """quant -> the trained tiny checkpoint exported at that quant (each once)."""
    out, made = tmp_path_factory.mktemp("tiny_gguf"), {}

    def get(quant: str) -> Path:
        if quant not in made:
            made[quant] = export_checkpoint(
                trained_tiny, "gguf", out / f"tiny-{quant}.gguf", ExportOptions(quant)
            )
        return made[quant]

    return get


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model(small_config(), seed=0)
    return save_pretrained(model, small_tokenizer(), tmp_path_factory.mktemp("small") / "ckpt")


# ------------------------------------------------------------------ 1. f32: exact
def test_f32_matches_pytorch_float32(tiny, tiny_gguf) -> None:
    model, tok = tiny
    prompt = tok.encode(PROMPT, bos=True)
    runtime = gguf_format.open_runtime(tiny_gguf("f32"), kv_cache="f32")
    recorder = Recorder(runtime)
    file_tokens, our_tokens = greedy(recorder, model, prompt)
    assert file_tokens == our_tokens
    got = torch.stack(recorder.logits)  # [64, vocab]: after the prompt, then after each new token
    ref = model_logits(model, prompt, file_tokens)
    assert got.shape == ref.shape == (STEPS, tok.vocab_size)
    err = (got - ref).abs().max().item()
    print(f"f32 GGUF, f32 cache: max |logit error| {err:.2e} over {STEPS} steps")
    assert err <= 1e-3
    assert ref.abs().max() > 1.0  # not a degenerate comparison
    assert runtime.metadata["quant"] == "f32" and runtime.max_context == model.config.max_position_embeddings
    assert runtime.eos_token_id == list(model.config.eos_token_id)
    runtime.close()


# ------------------------------------------------------------------ 2. f16
def test_f16_matches_float16_weights(tiny, tiny_gguf) -> None:
    model, tok = tiny
    prompt = tok.encode(PROMPT, bos=True)
    rounded = Transformer(model.config).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    runtime = gguf_format.open_runtime(tiny_gguf("f16"))  # llama.cpp's default f16 cache
    recorder = Recorder(runtime)
    file_tokens, our_tokens = greedy(recorder, model, prompt)
    assert file_tokens == our_tokens
    ref = model_logits(rounded, prompt, file_tokens)
    err = (torch.stack(recorder.logits) - ref).abs().max().item()
    tol = F16_REL_TOL * ref.abs().max().item()
    print(f"f16 GGUF, f16 cache: max |logit error| {err:.2e} (tolerance {tol:.2e})")
    assert err <= tol
    assert tiny_gguf("f16").stat().st_size < 0.6 * tiny_gguf("f32").stat().st_size  # matrices in f16
    runtime.close()


# ------------------------------------------------------------------ 3. quantized
@pytest.mark.parametrize("quant", QUANTS)
def test_quantized_matches_eager_same_weights(small_ckpt, tmp_path, quant) -> None:
    path = export_checkpoint(small_ckpt, "gguf", tmp_path / f"small-{quant}.gguf", ExportOptions(quant))
    model, tok = load_pretrained(small_ckpt, dtype=torch.float32)
    eager = Transformer(model.config).eval()  # our model on the file's own (dequantized) weights
    eager.load_state_dict(gguf_format.read_weights(path, model.config))
    runtime = gguf_format.open_runtime(path, kv_cache="f32")
    prompt = tok.encode(PROMPT, bos=True)
    file_tokens, our_tokens = greedy(runtime, eager, prompt)
    same_prefix = next(
        (i for i, (a, b) in enumerate(zip(file_tokens, our_tokens, strict=True)) if a != b), STEPS
    )
    ref = model_logits(eager, prompt, our_tokens)  # teacher-forced on the eager greedy path
    recorder = Recorder(runtime)
    recorder.forward(prompt, 0)
    for i, token in enumerate(our_tokens[:-1]):
        recorder.forward([token], len(prompt) + i)
    got = torch.stack(recorder.logits)
    agree = got.argmax(-1) == ref.argmax(-1)
    top2 = ref.topk(2, dim=-1).values
    confident = top2[:, 0] - top2[:, 1] >= QUANT_MARGIN
    err = (got - ref).abs().max().item()
    print(
        f"{quant}: greedy tokens equal for the first {same_prefix}/{STEPS}; teacher-forced top-1 "
        f"agreement {agree.float().mean():.3f}; max |logit error| {err:.3f}; "
        f"{int(confident.sum())} confident steps"
    )
    assert agree.float().mean() >= QUANT_MIN_AGREEMENT
    assert agree[confident].all()
    assert len(set(our_tokens)) > 8  # the random model does not repeat one token
    held_out = tok.encode(HELD_OUT, bos=True)
    agreement = top1_agreement(runtime, model, held_out)
    print(
        f"{quant}: top-1 agreement with the unquantized model over {len(held_out)} positions {agreement:.3f}"
    )
    assert agreement >= HELD_OUT_MIN_AGREEMENT[quant]
    runtime.close()


# ------------------------------------------------------------------ 4. llama.cpp's tokenizer
def test_llama_cpp_tokenizer_matches_ours(tiny, tiny_gguf) -> None:
    _, tok = tiny
    path = tiny_gguf("f16")
    chat = tok.apply_chat_template(chat_messages("What is 12 * 34?", "math"), True, tokenize=False)
    texts = [
        PROMPT,
        chat,
        "naïve café — 日本語のテキスト, Ünïcödé ✓ 🤖🚀",
        "digits 1234567 3.14159 -0.5e10 1,000,000 2024-01-31",
        "  two  spaces\n\n\tand a tab\r\n I'm sure we'LL DON'T  ",
    ]
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    runtime = gguf_format.open_runtime(path)
    for text in texts:
        ours = tok.encode(text, bos=True, allowed_special="all")
        assert llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) == ours, text
        assert runtime.tokenizer.encode(text, bos=True, allowed_special="all") == ours, text
    assert runtime.tokenizer.fingerprint() == tok.fingerprint()
    assert runtime.tokenizer.chat_template == tok.chat_template
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    llm.close()
    runtime.close()


def test_single_digit_tokenizer_exports_as_qwen2_pre(tmp_path) -> None:
    """A vocabulary trained with single digits goes into the file with llama.cpp's `qwen2`
    pre-tokenizer (Llama 3's regex with one digit per piece): llama.cpp splits numbers as we
    do, digit by digit, and the runtime rebuilds the same tokenizer."""
    texts = [
        f"{a} + {b} = {a + b}. Tom has {a} apples; 3.14 and 2024-01-31." for a in range(60) for b in (7, 95)
    ]
    tok = train_bpe(texts, 600, single_digits=True)
    model = build_model(dataclasses.replace(small_config(), vocab_size=tok.vocab_size), seed=0)
    ckpt = save_pretrained(model, tok, tmp_path / "ckpt")
    path = export_checkpoint(ckpt, "gguf", tmp_path / "digits.gguf", ExportOptions("f32"))
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    assert llm.metadata["tokenizer.ggml.pre"] == "qwen2"
    runtime = gguf_format.open_runtime(path)
    for text in ("Tom has 1234 apples: 29 + 76 = 105", "pi 3.14159, year 2024 and 1,000,000 ✓"):
        ours = tok.encode(text, bos=True)
        assert all(len(tok.decode([i]).strip()) <= 1 for i in ours if tok.decode([i]).strip().isdigit())
        assert llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) == ours, text
        assert runtime.tokenizer.encode(text, bos=True) == ours, text
    assert runtime.tokenizer.pat_str == SINGLE_DIGIT_PAT_STR
    llm.close()
    runtime.close()


# ------------------------------------------------------------------ 5. a transformers checkpoint
def test_transformers_checkpoint_exports(tmp_path) -> None:
    cfg = small_config()
    hf = transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**to_hf_config(cfg))).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # away from ones, so their placement is tested
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    hf.save_pretrained(tmp_path / "hf")
    small_tokenizer().save(tmp_path / "hf")
    path = export_checkpoint(tmp_path / "hf", "gguf", tmp_path / "hf.gguf", ExportOptions("f32"))
    runtime = gguf_format.open_runtime(path, kv_cache="f32")
    ids = runtime.tokenizer.encode(PROMPT, bos=True)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    got = torch.stack(
        [runtime.forward(ids[:1], 0)] + [runtime.forward([t], i) for i, t in enumerate(ids[1:], 1)]
    )
    err = (got - ref).abs().max().item()
    print(
        f"transformers Llama4ForCausalLM -> f32 GGUF: max |logit error| {err:.2e} over {len(ids)} positions"
    )
    assert err <= 1e-3
    assert ref.abs().max() > 1.0
    runtime.close()


# ------------------------------------------------------------------ 6. bad input
def test_missing_model_dir(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        export_checkpoint(tmp_path / "no-such-model", "gguf", out / "m.gguf", ExportOptions("f16"))
    assert files_in(out) == []


def test_nope_layers_refused(tmp_path) -> None:
    model = build_model(small_config(no_rope_layers=[1, 0, 1, 1]), seed=0)
    ckpt = save_pretrained(model, small_tokenizer(), tmp_path / "nope")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match=r"no_rope_layers: layers \[1\]"):
        export_checkpoint(ckpt, "gguf", out / "m.gguf", ExportOptions("q4_0"))
    assert files_in(out) == []
    tuned = small_config(no_rope_layers=[1, 0, 1, 1], attn_temperature_tuning=True)
    with pytest.raises(ExportError, match="attn_temperature_tuning acts only on those layers"):
        gguf_format.check(tuned, ExportOptions("f16"))
    # temperature tuning scales queries on NoPE layers only: without them it changes nothing
    gguf_format.check(small_config(attn_temperature_tuning=True), ExportOptions("f16"))
    with pytest.raises(ExportError, match="use_qk_norm"):
        gguf_format.check(small_config(use_qk_norm=False), ExportOptions("f16"))


def test_wrong_suffix_refused(small_ckpt, tmp_path) -> None:
    with pytest.raises(ExportError, match=r"must end in \.gguf"):
        export_checkpoint(small_ckpt, "gguf", tmp_path / "m.bin", ExportOptions("f16"))
    assert files_in(tmp_path) == []


def test_failure_while_writing_leaves_nothing(small_ckpt, tmp_path, monkeypatch) -> None:
    def broken_write(writer: gguf.GGUFWriter, **kwargs) -> None:
        writer.fout[0].write(b"half a tensor")
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken_write)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(small_ckpt, "gguf", tmp_path / "m.gguf", ExportOptions("f16"))
    assert files_in(tmp_path) == []


def test_failure_while_quantizing_leaves_nothing(small_ckpt, tmp_path, monkeypatch) -> None:
    def broken_quantize(src: Path, dst: Path, quant: str) -> None:
        assert src.stat().st_size > 0  # the f32 intermediate was written beside the output
        Path(dst).write_bytes(b"partial")
        raise ExportError("llama.cpp could not quantize")

    monkeypatch.setattr(gguf_format, "quantize", broken_quantize)
    with pytest.raises(ExportError, match="could not quantize"):
        export_checkpoint(small_ckpt, "gguf", tmp_path / "m.gguf", ExportOptions("q4_k_m"))
    assert files_in(tmp_path) == []


def test_bad_files_refused(small_ckpt, tmp_path) -> None:
    good = export_checkpoint(small_ckpt, "gguf", tmp_path / "good.gguf", ExportOptions("f16"))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ExportError, match=r"truncated\.gguf: llama\.cpp cannot load"):
        gguf_format.open_runtime(truncated)
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ExportError, match=r"text\.gguf: not a GGUF file"):
        gguf_format.open_runtime(tmp_path / "text.gguf")
    with pytest.raises(FileNotFoundError, match=r"absent\.gguf"):
        gguf_format.open_runtime(tmp_path / "absent.gguf")
    with pytest.raises(ValueError, match="kv_cache"):
        gguf_format.open_runtime(good, kv_cache="q8_0")


def test_mismatched_tokenizer_refused(small_ckpt, tmp_path) -> None:
    model, tok = load_pretrained(small_ckpt, dtype=torch.float32)
    path = tmp_path / "m.gguf"
    metadata = {"mobilellm_r1.config": json.dumps(model.config.to_dict())}
    metadata |= {"mobilellm_r1.max_context": "64", "mobilellm_r1.tokenizer_sha256": "0" * 64}
    gguf_format.write(model, tok, path, ExportOptions("f32"), metadata)
    with pytest.raises(ExportError, match=r"m\.gguf: the vocabulary in the file is not the tokenizer"):
        gguf_format.open_runtime(path)
