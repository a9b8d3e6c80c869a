"""`GGUFRuntime`: an exported `.gguf` file run by stock llama.cpp (llama-cpp-python, CPU), as a
`deploy.file_runtime.FileRuntime`.

The export metadata and the tokenizer come from what llama.cpp itself loaded (its metadata KVs,
its token texts and attributes), so the prompt ids we build are the ids of the file's own
vocabulary; the tokenizer is refused unless its fingerprint is the one recorded at export.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
import torch

from ...tokenizer import LLAMA3_PAT_STR, SINGLE_DIGIT_PAT_STR, Tokenizer, ranks_from_byte_level_vocab
from ..file_runtime import check_forward_input
from .contract import ExportError, read_metadata, sha256_text

# llama.cpp's pre-tokenizers hard-code their split regex: the ones our tokenizers use, by name
PRE_TOKENIZERS = {"llama-bpe": LLAMA3_PAT_STR, "qwen2": SINGLE_DIGIT_PAT_STR}

GGUF_MAGIC = b"GGUF"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
KV_CACHE_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}


@contextlib.contextmanager
def llama_cpp_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines in a list instead of printing them, while inside (then the
    previous callback, llama-cpp-python's, is restored). Its errors explain a failed load or
    quantization; its info and warning lines would only be noise on stderr."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    previous, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(user_data))
    llama_cpp.llama_log_set(collect, None)
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(previous, user_data)


def log_errors(lines: list[str]) -> str:
    """The error lines of a llama.cpp log, joined (for an error message)."""
    errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
    return "; ".join(errors) or "llama.cpp logged no reason"


def load_llama(path: Path, threads: int | None, kv_cache: str) -> llama_cpp.Llama:
    """llama.cpp's model and context for `path` on the CPU, the context as long as the file's
    context_length (the export's max_context), logits of the last token only; ExportError naming
    the file when llama.cpp cannot load it."""
    if kv_cache not in KV_CACHE_TYPES:
        raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHE_TYPES)}, got {kv_cache!r}")
    with path.open("rb") as fh:
        if fh.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ExportError(f"{path}: not a GGUF file (no GGUF magic at its start)")
    cache_type = KV_CACHE_TYPES[kv_cache]
    with llama_cpp_log() as log:
        try:
            return llama_cpp.Llama(
                str(path),
                n_ctx=0,  # 0: the file's context_length
                n_gpu_layers=0,
                n_threads=threads,
                n_threads_batch=threads,
                type_k=cache_type,
                type_v=cache_type,
                logits_all=False,
                verbose=False,
            )
        except ValueError:  # llama-cpp-python's "Failed to load model from file: ..."
            raise ExportError(f"{path}: llama.cpp cannot load this GGUF file: {log_errors(log)}") from None


def vocab_from_llama(llm: llama_cpp.Llama) -> tuple[dict[str, int], dict[str, int]]:
    """(byte-level vocabulary, special tokens) as llama.cpp loaded them: normal tokens and
    control tokens by text -> id (unused padding rows are neither)."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    normal, special = {}, {}
    for i in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attr = llama_cpp.llama_vocab_get_attr(vocab, i)
        text = llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8")
        if attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            special[text] = i
        elif attr & llama_cpp.LLAMA_TOKEN_ATTR_NORMAL:
            normal[text] = i
    return normal, special


def tokenizer_from_llama(llm: llama_cpp.Llama, metadata: dict[str, str], path: Path) -> Tokenizer:
    """Our `Tokenizer` rebuilt from the file's vocabulary and chat template; ExportError if it is
    not the tokenizer (or template) the file was exported with."""
    normal, special = vocab_from_llama(llm)
    pre = llm.metadata.get("tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZERS:
        raise ExportError(
            f"{path}: pre-tokenizer {pre!r} is not one this project writes ({', '.join(PRE_TOKENIZERS)})"
        )
    pat_str = PRE_TOKENIZERS[pre]
    try:
        ranks = ranks_from_byte_level_vocab(normal, set())
        template = llm.metadata.get(CHAT_TEMPLATE_KEY)
        tokenizer = Tokenizer(ranks, special, pat_str=pat_str, chat_template=template, name_or_path=str(path))
    except ValueError as exc:
        raise ExportError(f"{path}: its vocabulary does not make a tokenizer ({exc})") from None
    if tokenizer.fingerprint() != metadata["tokenizer_sha256"]:
        raise ExportError(
            f"{path}: the vocabulary in the file is not the tokenizer it was exported with "
            f"(fingerprint {tokenizer.fingerprint()[:12]}, metadata tokenizer_sha256 "
            f"{metadata['tokenizer_sha256'][:12]})"
        )
    if sha256_text(tokenizer.chat_template) != metadata["chat_template_sha256"]:
        raise ExportError(f"{path}: {CHAT_TEMPLATE_KEY} differs from the exported chat template")
    return tokenizer


class GGUFRuntime:
    """A `.gguf` file in llama.cpp, batch 1 (see `deploy.file_runtime.FileRuntime`).

    `kv_cache` "f16" is llama.cpp's default cache type; "f32" stores keys and values exactly,
    so an f32 file then computes our float32 model's function to float rounding."""

    def __init__(self, path: str | Path, threads: int | None = None, kv_cache: str = "f16") -> None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"GGUF file not found: {file}")
        self.path = str(file)
        self.kv_cache = kv_cache
        self._llm = load_llama(file, threads, kv_cache)
        # freed before interpreter shutdown (llama-cpp-python's own __del__ fails once its
        # module globals are gone)
        self._finalizer = weakref.finalize(self, self._llm.close)
        self.metadata = read_metadata(self._llm.metadata, self.path)
        self.max_context = int(self.metadata["max_context"])
        if self._llm.n_ctx() < self.max_context:
            raise ExportError(f"{file}: llama.cpp gave a context of {self._llm.n_ctx()} < {self.max_context}")
        self.tokenizer = tokenizer_from_llama(self._llm, self.metadata, file)
        self.vocab_size = self._llm.n_vocab()
        self.eos_token_id = list(json.loads(self.metadata["config"])["eos_token_id"])

    def forward(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Logits [vocab] (float32) after `ids`, written at positions start .. start+len-1; what
        the cache held from `start` on is dropped first (Llama.eval removes the KV cells at
        positions >= its n_tokens, then decodes in n_batch chunks from there)."""
        llm = self._llm
        check_forward_input(self, ids, start, llm.n_tokens)
        llm.n_tokens = start
        llm.eval(list(ids))
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # the last token's row
        row = np.ctypeslib.as_array(
            ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), shape=(self.vocab_size,)
        )
        return torch.from_numpy(row.copy())

    def close(self) -> None:
        """Free llama.cpp's model and context now (else when garbage-collected or at exit)."""
        self._finalizer()
