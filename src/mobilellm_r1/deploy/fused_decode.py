"""Fused batch-1 decoding: the model's one-token forward as 5 Triton kernels per layer, or 4
(`fuse_mlp`: the MLP as one kernel), or one persistent launch for all layers (`persistent`).

`FusedDecoder(model, cache)(tok, pos)` computes the same logits as
`model(tok, cache=cache, cache_pos=pos)` for one row and one token (see `decode_kernels.py`
for the kernels and the roundings they share with the eager model). For greedy decoding
`FusedDecoder.greedy_step` also picks the next token and advances the decode state on the
GPU, so a step is nothing but these kernels. For sampling, the Generator calls the decoder
through the opaque custom op `mobilellm_r1::fused_decode` (so a `torch.compile`d decode step
keeps it whole). Either way it captures blocks of steps in CUDA graphs of its own.

Launch shapes (`GemvBlocks`, attention tiles and splits) were chosen on an H100 with
`benchmarks/diag/fused_decode.py`; see `benchmarks/diag/NOTES.md`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..model.config import ModelConfig
from ..model.model import KVCache, Transformer

try:
    import triton

    from . import decode_attention as A
    from . import decode_kernels as K
    from . import decode_persistent as P
except ImportError:  # the CPU wheel of torch ships without Triton
    triton = None

TARGET_PROGRAMS = 192  # attention programs in all (see `attention_splits`)
ATTENTION_BLOCK = 16  # cache slots per attention tile
MERGE_SPLITS = 64  # attention partial results merged per step
ATTENTION_WARPS = 4
PREFETCH_PROGRAMS = 96  # attention programs (in all) that prefetch MLP weights into L2
PREFETCH_LINES = 256  # 128-byte lines per prefetch chunk
PREFETCH_BYTES = 4 << 20  # per layer, for layers whose MLP reads >= PREFETCH_MIN_MLP bytes
PREFETCH_MIN_MLP = 32 << 20
PERSISTENT_PREFETCH = 4 << 20  # per grid barrier of the persistent step (not yet tuned on a GPU)
INTERPRETER_PROGRAMS = 4  # persistent step programs under the interpreter (unless given)
STEP_MODES = {  # `FusedDecoder` options of each way to run a step (the benchmarks compare them)
    "five": {},  # five kernels per layer: the default
    "fuse_mlp": {"fuse_mlp": True},
    "persistent": {"persistent": True},  # 5 phases per layer in one launch
    "persistent_fuse_mlp": {"persistent": True, "fuse_mlp": True},  # 4
}


@dataclass(frozen=True)
class GemvBlocks:
    """Launch shape of one matrix-vector product: rows per program, K per step, warps;
    `early`: let the next kernel launch (and preload) before this one's wait (on an H100,
    `fused_decode.py --shapes`: 140m -11 us per step, 950m -3 us)."""

    block_n: int
    block_k: int
    num_warps: int = 4
    early: bool = True
    rows: int = 0  # "mlp" only: hidden units per program, a multiple of block_n (0: block_n)


def matrix_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(output rows, inputs) of each matrix of the fused step; gate_up's rows are per half;
    "mlp" is gate_up and down in one kernel (`FusedDecoder(fuse_mlp=True)`)."""
    d, hd = cfg.hidden_size, cfg.head_dim
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hidden = cfg.intermediate_size_mlp
    return {
        "qkv": ((heads + 2 * kv) * hd, d),
        "o": (d, heads * hd),
        "gate_up": (hidden, d),
        "down": (d, hidden),
        "mlp": (hidden, d),
        "lm_head": (cfg.vocab_size, d),
    }


def gemv_blocks(name: str, n: int, k: int) -> GemvBlocks:
    """Launch shape of matrix `name` (qkv, o, gate_up, down, lm_head) with n output rows
    (per half, for gate_up) and k inputs. Timed inside the whole step on an H100
    (`fused_decode.py --shapes`, one matrix varied at a time): 950m's qkv and o read whole
    rows in one step (qkv 2 x 2,048: -9 us per step), its gate/up pair 4 rows x 512
    (-29 us against 2 x 512); down rows of >= 2,048 take 2 x 4,096 with 8 warps (140m -12 us
    against 2 x 1,024); the LM head keeps 4 rows (2 rows: +15 to +30 us)."""
    if name == "lm_head":
        return GemvBlocks(4, 256 if k < 1024 else 512)
    if name == "gate_up":
        return GemvBlocks(4, 512) if k >= 1024 else GemvBlocks(2, 1024)
    if name == "mlp":  # gate_up + down in one kernel (`fuse_mlp`): ~128 programs; not yet timed on a GPU
        return GemvBlocks(4, 512, 8, rows=max(4, n // 128 // 4 * 4))
    if name in ("qkv", "o") and k > 1024:
        return GemvBlocks(2, triton.next_power_of_2(k))
    if name == "down" and k >= 2048:
        return GemvBlocks(2, 4096, 8)
    return GemvBlocks(2, 1024)


def prefetch_ranges(gate_up: torch.Tensor, down: torch.Tensor, budget: int) -> list[tuple[torch.Tensor, int]]:
    """The first `budget` bytes that a layer's gate_up and down kernels read, as three
    (byte view, length) ranges: gate rows and up rows in equal parts (a gate_up program
    reads row n of both halves), then down's first rows once gate_up is covered."""
    n, k = gate_up.shape[0] // 2, gate_up.shape[1]
    row = k * gate_up.element_size()
    rows = min(n, budget // (2 * row))
    flat = gate_up.view(-1).view(torch.uint8)
    down_bytes = min(down.numel() * down.element_size(), budget - 2 * rows * row) if rows == n else 0
    return [(flat, rows * row), (flat[n * row :], rows * row), (down.view(-1).view(torch.uint8), down_bytes)]


def default_prefetch(model: Transformer) -> int:
    """MLP bytes per layer that the attention kernel prefetches into L2 by default. On an
    H100 (`fused_decode.py --prefetch`, position 1,024) 4 MB took 950m's step from 1,062 to
    1,035 us and more took longer (16 MB: 1,058, 48 MB: 1,137); 140m lost 5-20 us at any
    size. So: 4 MB where a layer's MLP reads >= 32 MB (950m: 57 MB), else none."""
    ff = model.layers[0].feed_forward
    mlp = sum(w.numel() * w.element_size() for w in (ff.gate_up_proj.weight, ff.down_proj.weight))
    return PREFETCH_BYTES if mlp >= PREFETCH_MIN_MLP else 0


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether fused decoding can run on `device`: CUDA with Triton installed, or any device
    under Triton's CPU interpreter (`TRITON_INTERPRET=1`, slow: for tests)."""
    return triton is not None and (device.type == "cuda" or _interpreting())


def attention_splits(max_len: int, kv_heads: int, block: int = ATTENTION_BLOCK) -> int:
    """Attention programs per kv head: 192 in all, and no more than the cache has tiles.
    Each program walks every n-th tile below the position, so a long cache costs nothing
    until it fills, and the merge reads at most this many partial results. On an H100
    (`benchmarks/diag/fused_decode.py --attention`) about 192 programs with 16-slot tiles
    were best at positions 1,024 and 4,096 for 140m (3 kv heads) and 950m (6): 950m at 4,096
    took 1,268 us per step with 32 splits per kv head and 1,312-1,392 with 64-128."""
    return max(1, min(-(-max_len // block), TARGET_PROGRAMS // kv_heads))


class FusedDecoder:
    """One-token forward of a `Transformer` for a batch-1 `KVCache` (see module docstring)."""

    def __init__(
        self,
        model: Transformer,
        cache: KVCache,
        blocks: Mapping[str, GemvBlocks] | None = None,
        attn_block: int = ATTENTION_BLOCK,
        attn_splits: int | None = None,
        pdl: bool = True,
        prefetch: int | None = None,
        fuse_mlp: bool = False,
        persistent: bool = False,
        persistent_warps: int = 4,
        persistent_programs: int | None = None,
        persistent_prefetch: int | None = None,
    ) -> None:
        """`blocks` overrides launch shapes by matrix (qkv, o, gate_up, down, lm_head),
        `attn_block` the cache slots per attention tile, `attn_splits` the attention programs
        per kv head; `pdl=False` launches every kernel after the last one ends; `prefetch`:
        bytes of each layer's MLP weights that its attention kernel asks L2 to fetch (default
        `default_prefetch` on NVIDIA GPUs, 0 elsewhere); `fuse_mlp`: each layer's MLP as one
        kernel (`decode_kernels.mlp_kernel`; 4 kernels per layer instead of 5), which reads
        down_proj transposed: a copy of those weights made here (so a decoder built before the
        weights change decodes with the old down_proj). `persistent`: all layers of a step in one
        launch of `decode_persistent.step_kernel` (the same work as the separate kernels, 5 phases
        per layer or 4 with `fuse_mlp`, grid barriers between phases; `persistent_warps` warps per
        program, `persistent_programs` programs, default as many as the GPU holds at once; before
        each barrier the programs ask L2 for the first `persistent_prefetch` bytes that the next
        phase reads, default PERSISTENT_PREFETCH on NVIDIA GPUs, else 0), then the LM head."""
        if triton is None:
            raise RuntimeError("fused decoding needs Triton (pip install triton)")
        cfg = model.config
        if cache.batch_size != 1:
            raise ValueError(f"fused decoding takes a batch-1 cache, got batch {cache.batch_size}")
        if cfg.head_dim & (cfg.head_dim - 1) or cfg.head_dim < 32:  # tensor-core tiles of head_dim / 2
            raise ValueError(f"fused decoding needs a power-of-two head_dim >= 32, got {cfg.head_dim}")
        if attn_block < 16 or attn_block & (attn_block - 1):
            raise ValueError(f"attn_block must be a power of two >= 16, got {attn_block}")
        self.model, self.cache, self.cfg = model, cache, cfg
        weight = model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        shapes = matrix_shapes(cfg)

        def buf(*shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.empty(shape, device=self.device, dtype=dtype or self.dtype)

        self.x, self.qkv = buf(d), buf(shapes["qkv"][0])
        self.attn, self.h = buf(shapes["o"][1]), buf(shapes["down"][1])
        self.n_splits = attn_splits or attention_splits(cache.max_len, self.n_kv, attn_block)
        # programmatic dependent launch (Hopper+): each kernel preloads weights during the last one
        hopper = self.device.type == "cuda" and torch.cuda.get_device_capability(self.device)[0] >= 9
        self.pdl = pdl and hopper
        nvidia = self.device.type == "cuda" and torch.version.hip is None
        self.prefetch = (default_prefetch(model) if nvidia else 0) if prefetch is None else prefetch
        if self.prefetch and not nvidia:
            raise ValueError("L2 prefetch (prefetch > 0) needs an NVIDIA GPU")
        self.part_o = buf(self.n_splits, self.n_heads, hd, dtype=torch.float32)
        self.part_ml = buf(self.n_splits, 2, self.n_heads, dtype=torch.float32)
        self.tickets = torch.zeros(self.n_kv, device=self.device, dtype=torch.int32)
        self.best = torch.full((K.ARGMAX_SLOTS.value,), -(2**63), device=self.device, dtype=torch.int64)
        self.greedy_logits = buf(1, cfg.vocab_size)  # written by greedy steps, read by no one
        self.inv_freq = model.inv_freq(self.device)
        self.kv = [(getattr(cache, f"k{i}"), getattr(cache, f"v{i}")) for i in range(cfg.num_hidden_layers)]
        self.launch = {"launch_pdl": True} if self.pdl else {}  # launch options of every kernel
        rep = self.n_heads // self.n_kv
        self.attn_meta = {  # compile-time arguments of the attention kernel (all but the layer's)
            "H": self.n_heads,
            "KVH": self.n_kv,
            "HD": hd,
            "BLOCK_REP": triton.next_power_of_2(rep),
            "BLOCK_Q": max(16, triton.next_power_of_2(rep)),  # tensor-core tile rows
            "BLOCK_S": attn_block,
            "MERGE": MERGE_SPLITS,
            "DOT_PRECISION": "ieee" if self.dtype == torch.float32 else "tf32",
            "PDL": self.pdl,
            "PREFETCH": self.prefetch > 0,
            "PF_LINES": PREFETCH_LINES,
            "num_warps": ATTENTION_WARPS,
        }
        self.n_prefetch = -(-PREFETCH_PROGRAMS // self.n_kv) if self.prefetch else 0  # per kv head
        self.prefetch_ranges = [
            prefetch_ranges(
                layer.feed_forward.gate_up_proj.weight, layer.feed_forward.down_proj.weight, self.prefetch
            )
            for layer in model.layers
        ]
        self.blocks = {name: gemv_blocks(name, n, k) for name, (n, k) in shapes.items()}
        self.fuse_mlp = fuse_mlp
        if fuse_mlp:  # [hidden, d] copies of down_proj's weight
            self.down_t = [layer.feed_forward.down_proj.weight.t().contiguous() for layer in model.layers]
        if fuse_mlp or persistent:  # the residual before attention; two float32 accumulators
            self.x_in = buf(d)
            self.mlp_acc = torch.zeros(2, d, device=self.device, dtype=torch.float32)
        self.blocks.update(blocks or {})
        self.persistent = persistent
        if persistent:
            budget = (
                (PERSISTENT_PREFETCH if nvidia else 0) if persistent_prefetch is None else persistent_prefetch
            )
            if budget and not nvidia:
                raise ValueError("L2 prefetch (persistent_prefetch > 0) needs an NVIDIA GPU")
            self._init_persistent(persistent_warps, persistent_programs, budget)

    def _init_persistent(self, num_warps: int, programs: int | None, prefetch: int) -> None:
        """Tables of the persistent step kernel: each layer's tensor addresses (the tensors kept
        alive here) and RoPE flag, the barrier counters, and its compile-time arguments."""
        cfg, layers = self.cfg, self.model.layers
        self.layer_tensors = [
            [
                layer.self_attn.qkv_proj.weight,
                layer.input_layernorm.weight,
                layer.self_attn.o_proj.weight,
                layer.feed_forward.gate_up_proj.weight,
                self.down_t[i] if self.fuse_mlp else layer.feed_forward.down_proj.weight,
                layer.post_attention_layernorm.weight,
                *self.kv[i],
            ]
            for i, layer in enumerate(layers)
        ]
        for row in self.layer_tensors:
            if any(t.dtype != self.dtype or not t.is_contiguous() for t in row):
                raise ValueError(f"the persistent step needs contiguous {self.dtype} weights and cache")
        ptrs = [[t.data_ptr() for t in row] for row in self.layer_tensors]
        self.layer_ptrs = torch.tensor(ptrs, device=self.device, dtype=torch.int64)
        rope = [int(layer.self_attn.use_rope) for layer in layers]
        self.layer_rope = torch.tensor(rope, device=self.device, dtype=torch.int32)
        per_layer = 4 if self.fuse_mlp else 5
        self.n_phases = P.n_phases(len(layers), per_layer)
        self.barriers = torch.zeros(self.n_phases, device=self.device, dtype=torch.int32)  # counters, flag
        self.programs = programs
        self.step_kernel_info: dict[str, int] = {}  # registers, spills, shared bytes (GPU, first launch)
        b, meta = self.blocks, self.attn_meta
        self.step_meta = {
            "D": cfg.hidden_size,
            "HIDDEN": cfg.intermediate_size_mlp,
            "QKV_N": b["qkv"].block_n,
            "QKV_K": b["qkv"].block_k,
            "O_N": b["o"].block_n,
            "O_K": b["o"].block_k,
            "MLP_ROWS": b["mlp"].rows or b["mlp"].block_n,
            "MLP_N": b["mlp"].block_n,
            "MLP_K": b["mlp"].block_k,
            "GU_N": b["gate_up"].block_n,
            "GU_K": b["gate_up"].block_k,
            "DN_N": b["down"].block_n,
            "DN_K": b["down"].block_k,
            "PER_LAYER": per_layer,
            "BLOCK_D": triton.next_power_of_2(cfg.hidden_size),
            "EMBED": 1024,
            **{k: meta[k] for k in ("H", "KVH", "HD", "BLOCK_REP", "BLOCK_Q", "BLOCK_S", "MERGE")},
            "DOT_PRECISION": meta["DOT_PRECISION"],
            "QK_NORM": cfg.use_qk_norm,
            "TEMP_TUNING": cfg.attn_temperature_tuning,
            "PF_BYTES": prefetch,
            **P.prefetch_sizes(cfg, self.model.embed_tokens.weight.element_size(), prefetch),
            "PF_LINES": PREFETCH_LINES,
            "num_warps": num_warps,
        }

    def _step_layers(self, tok: torch.Tensor, pos: torch.Tensor) -> None:
        """Embedding and every layer (`decode_persistent.step_kernel`): one launch on a GPU,
        one per phase (no barrier) under the interpreter."""
        cfg = self.cfg
        args = (
            self.layer_ptrs, self.layer_rope, self.model.embed_tokens.weight, tok, self.x, self.x_in,
            self.qkv, self.attn, self.h, self.mlp_acc, pos, self.inv_freq, self.part_o, self.part_ml, self.tickets,
            self.barriers,
        )  # fmt: skip
        scalars = (self.cache.max_len, self.n_splits, cfg.rms_norm_eps, cfg.head_dim**-0.5, cfg.attn_scale)
        scalars += (float(cfg.floor_scale),)
        n_barriers = self.n_phases - 1
        if _interpreting():
            for phase in range(self.n_phases):
                P.step_kernel[(self.programs or INTERPRETER_PROGRAMS,)](
                    *args, phase, phase + 1, n_barriers, *scalars, BARRIER=False, PDL=False, **self.step_meta
                )
            return
        if not self.step_kernel_info:  # the first launch on this GPU: size the grid
            resident = self._resident_programs(args, n_barriers, scalars)
            if self.programs is not None and self.programs > resident:
                raise ValueError(
                    f"persistent_programs={self.programs}: this GPU holds {resident} programs of the step "
                    "kernel at once, and its grid barrier needs all of them running"
                )
            self.programs = self.programs or resident
        P.step_kernel[(self.programs,)](
            *args, 0, self.n_phases, n_barriers, *scalars, BARRIER=True, PDL=self.pdl, **self.step_meta,
            **self.launch,
        )  # fmt: skip

    def _resident_programs(self, args: tuple, n_barriers: int, scalars: tuple) -> int:
        """As many step-kernel programs as the GPU holds at once (the grid barrier needs them all
        running): from the compiled kernel's registers and shared memory."""
        kernel = P.step_kernel.warmup(
            *args, 0, self.n_phases, n_barriers, *scalars, BARRIER=True, PDL=self.pdl, grid=(1,),
            **self.step_meta,
        )  # fmt: skip
        kernel._init_handles()  # loads the binary: n_regs (as in Triton's fused-softmax tutorial)
        props = torch.cuda.get_device_properties(self.device)
        device = triton.runtime.driver.active.utils.get_device_properties(self.device.index or 0)
        regs = device["max_num_regs"]
        limits = P.SMLimits(
            props.multi_processor_count, props.max_threads_per_multi_processor, regs,
            props.shared_memory_per_multiprocessor,
        )  # fmt: skip
        self.step_kernel_info = {
            "registers": kernel.n_regs,
            "spills": kernel.n_spills,
            "shared": kernel.metadata.shared,
        }
        return P.resident_programs(kernel.n_regs, kernel.metadata.shared, self.step_meta["num_warps"], limits)

    def barrier_timeouts(self) -> int:
        """1 if a grid barrier of the persistent step gave up waiting (its results are wrong:
        not every program was resident), else 0."""
        return int(self.barriers[-1].item()) if self.persistent else 0

    def _gemv(
        self,
        name: str,
        w: torch.Tensor,
        x: torch.Tensor,
        out: torch.Tensor,
        *,
        norm: torch.Tensor | None = None,
        epilogue: int = 0,
        res: torch.Tensor | None = None,
        fold: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """out = epilogue(w @ x'), x' = norm(x) if norm is given; res: the residual (default
        out, in place); fold: (acc, x_out): x + acc is x (`mlp_kernel`'s output folded in),
        written to x_out."""
        n = out.numel()
        b = self.blocks[name]
        acc, x_out = fold if fold is not None else (None, None)
        K.gemv_kernel[(triton.cdiv(n, b.block_n),)](
            w,
            x,
            norm if norm is not None else x,
            out if res is None else res,
            out,
            self.best,
            n,
            w.shape[1],
            self.cfg.rms_norm_eps,
            NORM=norm is not None,
            EPILOGUE=epilogue,
            BLOCK_N=b.block_n,
            BLOCK_K=b.block_k,
            PDL=self.pdl,
            EARLY=b.early,
            acc_ptr=acc,
            xout_ptr=x_out,
            FOLD=fold is not None,
            num_warps=b.num_warps,
            **self.launch,
        )

    def _mlp(self, layer: int) -> None:
        """Layer `layer`'s MLP of x as one kernel: its down product goes to accumulator
        layer % 2 (folded in by the next kernel that reads x), the other accumulator is zeroed."""
        x = self.x
        ff, norm = self.model.layers[layer].feed_forward, self.model.layers[layer].post_attention_layernorm
        hidden, b = self.down_t[layer].shape[0], self.blocks["mlp"]
        rows = b.rows or b.block_n
        K.mlp_kernel[(triton.cdiv(hidden, rows),)](
            ff.gate_up_proj.weight,
            self.down_t[layer],
            x,
            norm.weight,
            self.mlp_acc[layer % 2],
            self.mlp_acc[1 - layer % 2],
            hidden,
            x.numel(),
            self.cfg.rms_norm_eps,
            ROWS=rows,
            BLOCK_N=b.block_n,
            BLOCK_K=b.block_k,
            BLOCK_D=triton.next_power_of_2(x.numel()),
            PDL=self.pdl,
            EARLY=b.early,
            num_warps=b.num_warps,
            **self.launch,
        )

    def _attend(self, layer: int, pos: torch.Tensor) -> None:
        cfg, attn = self.cfg, self.model.layers[layer].self_attn
        k_cache, v_cache = self.kv[layer]
        (pf0, n0), (pf1, n1), (pf2, n2) = self.prefetch_ranges[layer]
        A.attend_kernel[(self.n_kv, self.n_prefetch + self.n_splits)](
            self.qkv,
            k_cache,
            v_cache,
            pos,
            self.inv_freq,
            self.part_o,
            self.part_ml,
            self.tickets,
            self.attn,
            pf0,
            pf1,
            pf2,
            n0,
            n1,
            n2,
            self.cache.max_len,
            self.n_splits,
            cfg.rms_norm_eps,
            cfg.head_dim**-0.5,
            cfg.attn_scale,
            float(cfg.floor_scale),
            ROPE=attn.use_rope,
            QK_NORM=attn.use_qk_norm,
            TEMP_TUNING=attn.temperature_tuning,
            **self.attn_meta,
            **self.launch,
        )

    @torch.no_grad()
    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tok [1] (or [1, 1]) at cache slot = position pos [1] -> logits [1, vocab]."""
        logits = torch.empty(1, self.cfg.vocab_size, device=self.device, dtype=self.dtype)
        self._forward(tok, pos, logits, K.EPILOGUE_STORE)
        return logits

    @torch.no_grad()
    def greedy_step(
        self,
        tok: torch.Tensor,
        pos: torch.Tensor,
        finished: torch.Tensor,
        stop_ids: torch.Tensor,
        out: torch.Tensor,
        idx: torch.Tensor,
        pad_id: int,
    ) -> None:
        """One greedy decode step, bookkeeping included, all in place: tok [1] at slot pos [1]
        -> its argmax next token (pad_id once finished [1] is set) in tok and out[0, idx];
        finished |= that token is in stop_ids; pos and idx advance by one. The argmax is
        folded into the LM-head kernel, the rest is one small kernel."""
        self._forward(tok, pos, self.greedy_logits, K.EPILOGUE_ARGMAX)
        K.greedy_advance_kernel[(1,)](
            self.best,
            tok,
            pos,
            idx,
            finished,
            stop_ids,
            out,
            stop_ids.numel(),
            pad_id,
            BLOCK_STOP=triton.next_power_of_2(max(stop_ids.numel(), 1)),
            PDL=self.pdl,
            **self.launch,
        )

    def _forward(self, tok: torch.Tensor, pos: torch.Tensor, logits: torch.Tensor, lm_epilogue: int) -> None:
        if self.persistent:
            self._step_layers(tok, pos)
            fold = (self.mlp_acc[(len(self.model.layers) - 1) % 2], self.x_in) if self.fuse_mlp else None
        else:
            fold = self._layers(tok, pos)
        self._gemv(
            "lm_head",
            self.model.lm_head.weight,
            self.x,
            logits,
            norm=self.model.norm.weight,
            epilogue=lm_epilogue,
            fold=fold,
        )

    def _layers(self, tok: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Embedding and every layer as separate kernels; returns the last MLP's accumulator and
        x_in (fuse_mlp) for the LM head to fold, else None."""
        d = self.cfg.hidden_size
        K.embed_kernel[(triton.cdiv(d, 1024),)](
            self.model.embed_tokens.weight, tok, self.x_in if self.fuse_mlp else self.x, d, BLOCK=1024,
            PDL=self.pdl, zero_ptr=self.mlp_acc if self.fuse_mlp else None, ZERO=self.fuse_mlp, **self.launch,
        )  # fmt: skip
        fold = None
        for i in range(len(self.model.layers)):
            if self.fuse_mlp:
                fold = self._layer_one_kernel_mlp(i, pos, fold)
            else:
                self._layer(i, pos)
        return fold

    def _layer(self, i: int, pos: torch.Tensor) -> None:
        """Decoder layer i in five kernels, the residual x updated in place."""
        layer = self.model.layers[i]
        attn, ff = layer.self_attn, layer.feed_forward
        self._gemv("qkv", attn.qkv_proj.weight, self.x, self.qkv, norm=layer.input_layernorm.weight)
        self._attend(i, pos)
        self._gemv("o", attn.o_proj.weight, self.attn, self.x, epilogue=K.EPILOGUE_RESIDUAL)
        self._gemv(
            "gate_up",
            ff.gate_up_proj.weight,
            self.x,
            self.h,
            norm=layer.post_attention_layernorm.weight,
            epilogue=K.EPILOGUE_SWIGLU,
        )
        self._gemv("down", ff.down_proj.weight, self.h, self.x, epilogue=K.EPILOGUE_RESIDUAL)

    def _layer_one_kernel_mlp(
        self, i: int, pos: torch.Tensor, fold: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder layer i in four kernels. x_in: the residual before attention (the embedding,
        or x with the last MLP's accumulator `fold` added, written by this layer's qkv kernel);
        x: after attention. Returns this layer's MLP accumulator for the next kernel to fold."""
        attn = self.model.layers[i].self_attn
        norm = self.model.layers[i].input_layernorm.weight
        self._gemv(
            "qkv", attn.qkv_proj.weight, self.x_in if i == 0 else self.x, self.qkv, norm=norm, fold=fold
        )
        self._attend(i, pos)
        self._gemv("o", attn.o_proj.weight, self.attn, self.x, epilogue=K.EPILOGUE_RESIDUAL, res=self.x_in)
        self._mlp(i)
        return self.mlp_acc[i % 2], self.x_in


_DECODERS: weakref.WeakValueDictionary[int, FusedDecoder] = weakref.WeakValueDictionary()


def register(decoder: FusedDecoder) -> int:
    """A handle under which `fused_decode` finds `decoder` (held weakly)."""
    _DECODERS[id(decoder)] = decoder
    return id(decoder)


@torch.library.custom_op("mobilellm_r1::fused_decode", mutates_args=("cache",))
def fused_decode(
    tok: torch.Tensor, pos: torch.Tensor, cache: list[torch.Tensor], handle: int
) -> torch.Tensor:
    """Logits [1, vocab] of the registered decoder `handle`; writes this token into `cache`
    (its KVCache's buffers, named so that the compiler knows they change)."""
    return _DECODERS[handle](tok, pos)


@fused_decode.register_fake
def _(tok: torch.Tensor, pos: torch.Tensor, cache: list[torch.Tensor], handle: int) -> torch.Tensor:
    decoder = _DECODERS[handle]
    return tok.new_empty((1, decoder.cfg.vocab_size), dtype=decoder.dtype)
