"""ExecuTorch `.pte` files: the paper's on-device deployment (Appendix C, Table 10), run on CPU
through XNNPACK.

The program (`pte_program.PteProgram`) is the model's own float32 modules with the KV cache
inside as mutable buffers: `forward(tokens [1, T], input_pos [1]) -> logits [1, vocab]` of the
last of T tokens written from position input_pos[0]. T is dynamic from 1 to `chunk_tokens`
(at most `PREFILL_CHUNK`, as in ExecuTorch's llama export): memory planning sizes activations
for the largest T (tiny at 1k context: 3.1 MB planned with T <= 128, 9.7 MB with T <= 1024), so
the chunk, not the context, bounds them; `PteRuntime.forward` runs longer inputs in chunks.

`--quant 8da4w` (`quantize_8da4w`): torchao's int8 dynamic activations x int4 weights in groups
(128, or 32 where 128 does not divide a width) on every linear layer, the tied LM head
included, and an int4 embedding in groups of `--embedding-group-size`, which ExecuTorch's quant
fusion turns into `quantized_decomposed::embedding_4bit` over a packed table. Linear layers run
in XNNPACK (`write` refuses a program where one does not).

`--kv-cache int8` (`pte_program.KV_CACHES`) stores the KV cache as int8 rows with a scale and
zero point each and attends with `llama::custom_quantized_sdpa`; fp32 (the default) is
`llama::custom_sdpa` over float32. The metadata records the kind (`kv_cache`).

Where long-context decode time goes (140M, 2-core AMD EPYC, read from ExecuTorch's op_sdpa
source and measured with perf): the SDPA reads only the filled prefix (start_pos + T keys), but
it runs one task per query head (9 on 2 threads), so with GQA each kv head's keys and values are
read once per query head (3x), in 512-key blocks of two BLAS calls each. With the fp32 cache
those calls are MKL's sgemv, which on this non-Intel CPU takes its generic code path
(`mkl_blas_def_xsgemv`, 62% of decode time at 3k context); 3x reads of a float32 cache bound
32k decode to ~13 tok/s even at full bandwidth. The int8 cache reads a quarter of the bytes, but
on x86 ExecuTorch's int8 q@k and p@v are torchao's scalar fallback loops (its NEON kernels are
for ARM), so here it is no faster: fp32 stays the default (see benchmarks/ondevice_cpu.py).

Besides `forward`, the file has constant methods: the export metadata as UTF-8 JSON
(`METADATA_METHOD`) and the tokenizer.json text, zlib-deflated (`TOKENIZER_METHOD`; 7.2 MB ->
2.3 MB for Llama-3's), both as uint8 tensors, so the file is self-contained; and the keys
ExecuTorch's LLM runner reads (`get_max_seq_len`, `get_bos_id`, ...), so that C++ runner can run
the file given the tokenizer.json.
"""

from __future__ import annotations

import collections
import copy
import importlib.resources
import json
import os
import re
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...model.config import ModelConfig
from ...model.model import Transformer
from ...tokenizer import Tokenizer, parse_hf_tokenizer_json
from ..file_runtime import FileRuntime, check_forward_input
from .contract import (
    METADATA_PREFIX,
    ExportError,
    ExportOptions,
    check_group_size,
    default_group_size,
    read_metadata,
)
from .pte_program import KV_CACHES, PteProgram, load_custom_ops

if TYPE_CHECKING:
    from executorch.exir import ExecutorchProgramManager

PREFILL_CHUNK = 128  # most tokens per forward call (ExecuTorch's llama export uses 128 too)
METADATA_METHOD = "mobilellm_r1_metadata"
TOKENIZER_METHOD = "mobilellm_r1_tokenizer_json_zlib"
PTE_MAGIC = re.compile(rb"ET\d\d")  # the flatbuffer file identifier at bytes 4-8, e.g. ET12
LINEAR_OPS = ("aten::linear", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")


# Where ExecuTorch wheels put the `flatc` binary that serialises a program: (package, file)
FLATC_RESOURCES = (("executorch.exir._serialize", "flatbuffers-flatc"), ("executorch.data.bin", "flatc"))


# ------------------------------------------------------------------------------ checks
def ensure_flatc() -> None:
    """Make ExecuTorch's `flatc` findable before the minutes of lowering that need it at the
    end: recent ExecuTorch looks in its own package, 1.2 and older only at $FLATC_EXECUTABLE or
    `flatc` on PATH, which misses a venv's python run without activating the venv or a
    `pip install --target`. Points $FLATC_EXECUTABLE at the wheel's binary where needed;
    ExportError when there is none."""
    if os.environ.get("FLATC_EXECUTABLE") or shutil.which("flatc"):
        return
    for package, name in FLATC_RESOURCES:
        try:
            binary = importlib.resources.files(package).joinpath(name)
        except ModuleNotFoundError:
            continue
        if binary.is_file():
            os.environ["FLATC_EXECUTABLE"] = str(binary)
            return
    raise ExportError(
        "ExecuTorch's flatc (it writes the .pte) is neither on PATH nor in the executorch package: "
        "reinstall executorch (pip install '.[deploy]') or set FLATC_EXECUTABLE to a flatc binary"
    )


def weight_groups(cfg: ModelConfig, options: ExportOptions) -> tuple[int, int]:
    """(linear group, embedding group) of the 4-bit weights."""
    return options.group_size or default_group_size(cfg), options.embedding_group_size


def chunk_tokens(cfg: ModelConfig, options: ExportOptions) -> int:
    """Most tokens one call of the program takes."""
    return min(PREFILL_CHUNK, options.context(cfg))


def check(cfg: ModelConfig, options: ExportOptions) -> None:
    """ExportError for an unknown KV cache kind, and for 4-bit groups that do not divide a
    width (8da4w only)."""
    if options.kv_cache not in KV_CACHES:
        raise ExportError(f"--kv-cache {options.kv_cache!r}: pte takes {', '.join(KV_CACHES)}")
    if options.quant != "8da4w":
        return
    group, embedding_group = weight_groups(cfg, options)
    check_group_size(cfg, group)
    if embedding_group < 1 or cfg.hidden_size % embedding_group:
        raise ExportError(
            f"--embedding-group-size {embedding_group} does not divide the width {cfg.hidden_size} "
            "of embed_tokens (hidden_size)"
        )
    if cfg.hidden_size % 2:
        raise ExportError(f"a 4-bit embedding packs pairs: hidden_size {cfg.hidden_size} must be even")


# ------------------------------------------------------------------------------ quantization
def quantize_8da4w(model: nn.Module, group: int, embedding_group: int) -> nn.Module:
    """`model` quantized in place as the file is: every nn.Linear to int8 dynamic activations x
    int4 weights (symmetric, groups of `group`), every nn.Embedding to int4 weights (groups of
    `embedding_group`). A tied LM head is quantized as a linear layer (untying it).

    The linear weights' group scales are bfloat16 because XNNPACK stores them so (its blockwise
    int4 weights take bf16 scales; float32 ones are rounded when lowered): quantizing with the
    scales the file will hold makes this eager model compute what the file computes (one
    quantized linear: 3e-6 instead of 1e-2 apart)."""
    from torchao.quantization import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        PerGroup,
        quantize_,
    )

    linear = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(group), weight_scale_dtype=torch.bfloat16
    )
    quantize_(model, linear, filter_fn=lambda m, _: isinstance(m, nn.Linear))
    embedding = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(embedding_group))
    quantize_(model, embedding, filter_fn=lambda m, _: isinstance(m, nn.Embedding))
    return model


def prepared_model(model: Transformer, options: ExportOptions) -> Transformer:
    """A float32 copy of `model` with the file's quantization applied (the caller's is untouched)."""
    copied = copy.deepcopy(model).float().eval()
    if options.quant == "8da4w":
        quantize_8da4w(copied, *weight_groups(model.config, options))
    return copied


# ------------------------------------------------------------------------------ writing
def bytes_tensor(data: bytes) -> torch.Tensor:
    """uint8 tensor [len(data)] (what a constant method can return)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def constant_methods(
    cfg: ModelConfig, tokenizer: Tokenizer, metadata: dict[str, str], max_context: int, chunk: int
) -> dict[str, Any]:
    """Methods of the file that return constants: our metadata and tokenizer, and what
    ExecuTorch's LLM runner reads (names from its runner's constants)."""
    return {
        METADATA_METHOD: bytes_tensor(json.dumps(metadata, sort_keys=True).encode("utf-8")),
        TOKENIZER_METHOD: bytes_tensor(zlib.compress(tokenizer.to_hf_json().encode("utf-8"))),
        "get_max_seq_len": chunk,
        "get_max_context_len": max_context,
        "get_vocab_size": cfg.vocab_size,
        "get_n_layers": cfg.num_hidden_layers,
        "get_bos_id": cfg.bos_token_id,
        "get_eos_ids": list(cfg.eos_token_id),
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
    }


def export_program(program: PteProgram, chunk: int) -> torch.export.ExportedProgram:
    """torch.export with T dynamic in 1..chunk, then decomposed to core ATen (torchao's
    quantized tensors become their dequantize/quantize ops)."""
    example = (torch.zeros(1, min(2, chunk), dtype=torch.long), torch.zeros(1, dtype=torch.long))
    dims = ({1: torch.export.Dim("tokens", min=1, max=chunk)}, None) if chunk > 1 else None
    with torch.no_grad():
        exported = torch.export.export(program, example, dynamic_shapes=dims, strict=False)
        return exported.run_decompositions({})


def lower(
    exported: torch.export.ExportedProgram, methods: dict[str, Any], quantized: bool
) -> ExecutorchProgramManager:
    """ExecuTorch's LLM recipe: XNNPACK partitioners (dynamically quantized linears first when
    `quantized`), then quant fusion (the 4-bit embedding), memory planning for the largest T,
    inputs not planned."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackDynamicallyQuantizedPartitioner,
        XnnpackPartitioner,
    )
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    partitioners = [XnnpackPartitioner()]
    if quantized:
        partitioners.insert(0, XnnpackDynamicallyQuantizedPartitioner())
    edge = to_edge_transform_and_lower(
        exported,
        partitioner=partitioners,
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
        constant_methods=methods,
    )
    config = ExecutorchBackendConfig(
        extract_delegate_segments=True,
        do_quant_fusion_and_const_prop=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
    )
    return edge.to_executorch(config)


def write(
    model: Transformer, tokenizer: Tokenizer, path: Path, options: ExportOptions, metadata: dict[str, str]
) -> None:
    """Write the `.pte` at `path` (see the module docstring); ExportError if a linear layer
    was left outside XNNPACK."""
    ensure_flatc()
    load_custom_ops()
    cfg, max_context = model.config, options.context(model.config)
    chunk = chunk_tokens(cfg, options)
    program = PteProgram(prepared_model(model, options), max_context, options.kv_cache).eval()
    metadata = {**metadata, METADATA_PREFIX + "kv_cache": options.kv_cache}
    methods = constant_methods(cfg, tokenizer, metadata, max_context, chunk)
    lowered = lower(export_program(program, chunk), methods, quantized=options.quant == "8da4w")
    undelegated = {op: n for op, n in plan_ops(lowered.executorch_program).items() if op in LINEAR_OPS}
    if undelegated:
        raise ExportError(f"{path}: linear layers left outside XNNPACK: {undelegated}")
    with Path(path).open("wb") as fh:
        lowered.write_to_file(fh)


def plan_ops(program: Any) -> collections.Counter[str]:
    """Calls in the `forward` plan of an ExecuTorch `schema.Program`: one 'name' per kernel
    call (e.g. 'llama::custom_sdpa'), one 'delegate:<backend>' per delegate call."""
    from executorch.exir.schema import DelegateCall, KernelCall

    plan = next(p for p in program.execution_plan if p.name == "forward")
    calls: collections.Counter[str] = collections.Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            if isinstance(args, KernelCall):
                calls[plan.operators[args.op_index].name] += 1
            elif isinstance(args, DelegateCall):
                calls[f"delegate:{plan.delegates[args.delegate_index].id}"] += 1
    return calls


def file_ops(path: str | Path) -> collections.Counter[str]:
    """`plan_ops` of a `.pte` file as written (deserialized from its bytes)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    return plan_ops(deserialize_pte_binary(Path(path).read_bytes()).program)


# ------------------------------------------------------------------------------ runtime
def set_threads(threads: int) -> None:
    """Size ExecuTorch's CPU thread pool (XNNPACK's) and PyTorch's (process-wide) alike. The
    two must match: with 2 ExecuTorch threads and 1 PyTorch thread, or the reverse, a 512-token
    prefill of the tiny 8da4w file ran at ~400 tok/s instead of ~12k-20k (2-core machine)."""
    from executorch.extension.pybindings import portable_lib

    if threads < 1:
        raise ValueError(f"threads must be positive, got {threads}")
    portable_lib._unsafe_reset_threadpool(threads)
    torch.set_num_threads(threads)


def constant_bytes(program: Any, method: str, path: Path) -> bytes:
    """What a constant method of a loaded program returns, as bytes (a uint8 tensor)."""
    if method not in program.method_names:
        raise ExportError(f"{path}: not written by `mobilellm-r1 export` (no {method} method)")
    (tensor,) = program.load_method(method).execute([])
    return bytes(tensor.numpy())


OPERATOR_MISSING = re.compile(r"error: 0x:?14\b")  # ExecuTorch's Error::OperatorMissing


def load_failure(file: Path, exc: Exception) -> str:
    """Why ExecuTorch's runtime refused `file`: a kernel this executorch build lacks (its log
    line above names the operator) or a damaged file."""
    if OPERATOR_MISSING.search(str(exc)):
        from importlib.metadata import version

        return (
            f"{file}: this ExecuTorch runtime (executorch {version('executorch')}) has no kernel for an "
            f"operator the program uses (the 'Missing operator' line above names it); run it with the "
            f"executorch release it was exported for (the deploy extra pins 1.5.x: older Python runtimes "
            f"lack the 4-bit embedding of --quant 8da4w), or export it with --quant none ({exc})"
        )
    return f"{file}: not a loadable ExecuTorch program, truncated or corrupt ({exc})"


class PteRuntime:
    """A `.pte` file in ExecuTorch's runtime (see `deploy.file_runtime.FileRuntime`)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"ExecuTorch file not found: {file}")
        load_custom_ops()
        set_threads(threads or torch.get_num_threads())  # the two pools must match (set_threads)
        from executorch.runtime import Runtime

        self.path = str(file)
        with file.open("rb") as fh:
            if not PTE_MAGIC.fullmatch(fh.read(8)[4:]):
                raise ExportError(f"{file}: not an ExecuTorch program (no ETnn identifier at byte 4)")
        try:
            program = Runtime.get().load_program(file)
            self._forward = program.load_method("forward")
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ExportError(load_failure(file, exc)) from None
        values = json.loads(constant_bytes(program, METADATA_METHOD, file).decode("utf-8"))
        self.metadata = read_metadata(values, self.path)
        config = json.loads(self.metadata["config"])
        self.max_context = int(self.metadata["max_context"])
        self.chunk = int(program.load_method("get_max_seq_len").execute([])[0])
        self.vocab_size = int(config["vocab_size"])
        self.eos_token_id = list(config["eos_token_id"])
        tokenizer_json = zlib.decompress(constant_bytes(program, TOKENIZER_METHOD, file)).decode("utf-8")
        self.tokenizer = self._tokenizer(tokenizer_json)
        self._program = program  # the methods need it alive
        self._filled = 0  # positions of the KV cache written so far

    def _tokenizer(self, text: str) -> Tokenizer:
        """The embedded tokenizer, refused unless it is the one the file was exported with."""
        ranks, specials, pat_str = parse_hf_tokenizer_json(text, f"{self.path} (embedded tokenizer.json)")
        tokenizer = Tokenizer(
            ranks,
            specials,
            pat_str=pat_str,
            chat_template=self.metadata["chat_template"],
            name_or_path=self.path,
        )
        if tokenizer.fingerprint() != self.metadata["tokenizer_sha256"]:
            raise ExportError(
                f"{self.path}: the embedded tokenizer is not the one it was exported with "
                f"(fingerprint {tokenizer.fingerprint()[:12]}, metadata tokenizer_sha256 "
                f"{self.metadata['tokenizer_sha256'][:12]})"
            )
        return tokenizer

    def forward(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Logits [vocab] (float32) after `ids`, written at positions start .. start+len-1 in
        calls of at most `chunk` tokens; what the cache held from `start` on is overwritten."""
        check_forward_input(self, ids, start, self._filled)
        tokens = torch.tensor([list(ids)], dtype=torch.long)
        for i in range(0, tokens.shape[1], self.chunk):
            pos = torch.tensor([start + i], dtype=torch.long)
            (logits,) = self._forward.execute([tokens[:, i : i + self.chunk], pos])
            self._filled = start + min(i + self.chunk, tokens.shape[1])
        return logits[0].float()


def open_runtime(path: Path, threads: int | None = None) -> FileRuntime:
    """The file in ExecuTorch's runtime; `threads` (default: PyTorch's thread count) sizes its
    thread pool and PyTorch's alike (`set_threads`)."""
    return PteRuntime(path, threads)
