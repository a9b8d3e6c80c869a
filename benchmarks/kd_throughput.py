"""Mid-training (live logit distillation) throughput: the paper's setting on one GPU.

Student: our preset (default 950m), each layer compiled, bf16 autocast, fused AdamW, sequence
4,096 (paper Table 4). Teacher: a randomly initialised Llama-3.1-8B-shaped transformers
`LlamaForCausalLM` (the paper's teacher architecture; no hub access here), bf16, no grad, SDPA.
Two loss paths, same step otherwise:
  full  : the teacher's full logits [B*T, 128256] materialised, eager float32 KL chunks
          (the trainer before session 4)
  chunked: `Teacher` hands the loss its final hidden states and LM head, logits made per loss
          chunk, KL chunks fused by `torch.compile` (what `compile: true` trains with now)
Also timed: the teacher's forward alone, the floor a live teacher puts under each step.
MFU both ways (measured bf16 matmul peak, vendor's dense bf16 figure) with FLOPs per token =
the student's training FLOPs (3 x forward) + the teacher's forward FLOPs (formula in the JSON).

    python benchmarks/kd_throughput.py --student 950m --micro-batch 4
"""

from __future__ import annotations

import argparse
import json

import torch

from mobilellm_r1.model import build_model, preset
from mobilellm_r1.train.config import DistillSection, OptimSection
from mobilellm_r1.train.metrics import measure_peak_flops, mfu_both, vendor_peak_flops
from mobilellm_r1.train.objectives.kd import KDObjective
from mobilellm_r1.train.optim import build_optimizer
from mobilellm_r1.train.teacher import Teacher, transformers_teacher
from provenance import dated_result, result_header, write_result
from train_throughput import RandomBatch, time_step

LLAMA_31_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                   tie_word_embeddings=False)  # fmt: skip


def build_teacher(layers: int) -> tuple[torch.nn.Module, Teacher, Teacher]:
    import transformers

    config = transformers.LlamaConfig(**{**LLAMA_31_8B, "num_hidden_layers": layers})
    config._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model, transformers_teacher(model, per_chunk=True), transformers_teacher(model, per_chunk=False)


def kd_step(student: str, teacher: Teacher, fused: bool, micro: int, seq: int, chunk: int):
    model = build_model(preset(student), device="cuda", seed=0)
    for layer in model.layers:
        layer.compile()
    objective = KDObjective(model, chunk, False, teacher, DistillSection(), fused_loss=fused)
    opt = build_optimizer(objective, OptimSection(lr=1e-4))
    batch = RandomBatch(torch.randint(0, 128000, (micro, seq + 1), device="cuda"))

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective(batch) / (micro * seq)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


FLOP_FORMULA = (
    "student: 3 x forward matmul FLOPs (ModelConfig.flops_per_token(seq)['train']); teacher forward: "
    "2 x (params - embedding) + 4 x layers x hidden x seq; per token"
)


def teacher_forward_flops(teacher, seq: int) -> float:
    """Forward matmul FLOPs per token of a transformers decoder (embedding lookup excluded)."""
    c = teacher.config
    matmul = sum(x.numel() for x in teacher.parameters()) - c.vocab_size * c.hidden_size
    return 2.0 * matmul + 4.0 * c.num_hidden_layers * c.hidden_size * seq


def measure(step, micro: int, seq: int, steps: int, flops_per_token: float, peaks: tuple) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        seconds = time_step(step, steps=steps, warmup=3)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    tps = micro * seq / seconds
    return {
        "tokens_per_s": tps,
        "step_s": seconds,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "flops_per_token": flops_per_token,
        **mfu_both(tps * flops_per_token, *peaks),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="950m")
    p.add_argument("--teacher-layers", type=int, default=32, help="Llama-3.1-8B has 32")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--chunk", type=int, default=4096, help="tokens per loss chunk")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    teacher_model, chunked, full = build_teacher(args.teacher_layers)
    peaks = (measure_peak_flops(torch.device("cuda")), vendor_peak_flops(torch.device("cuda")))
    teacher_fpt = teacher_forward_flops(teacher_model, args.seq)
    student_fpt = preset(args.student).flops_per_token(args.seq)["train"]
    ids = torch.randint(0, 128000, (args.micro_batch, args.seq), device="cuda")
    rows = {
        "teacher_forward_only": measure(
            lambda: chunked.chunks(ids), args.micro_batch, args.seq, args.steps, teacher_fpt, peaks
        )
    }
    for name, teacher, fused in (("full", full, False), ("chunked", chunked, True)):
        step = kd_step(args.student, teacher, fused, args.micro_batch, args.seq, args.chunk)
        rows[name] = measure(step, args.micro_batch, args.seq, args.steps, student_fpt + teacher_fpt, peaks)
        print(name, json.dumps(rows[name]), flush=True)
        del step
    result = {
        **result_header("kd_throughput"),
        "config": {
            **vars(args),
            "teacher": "Llama-3.1-8B shape, random init, bf16",
            "teacher_params": sum(x.numel() for x in teacher_model.parameters()),
            "flop_formula": FLOP_FORMULA,
            "peak_flops": {"measured": peaks[0], "vendor": peaks[1]},
        },
        "results": rows,
    }
    write_result(result, args.out or dated_result(f"kd_throughput_{args.student}"))
    print(f"{'path':>22} {'tok/s':>9} {'s/step':>7} {'GiB':>6} {'MFU':>6} {'vendor':>6}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:>22} {r['error']}")
        else:
            mfu = [f"{r[k]:.1%}" if r[k] is not None else "-" for k in ("mfu", "mfu_vendor")]
            print(
                f"{name:>22} {r['tokens_per_s']:9.0f} {r['step_s']:7.3f} {r['peak_mem_gib']:6.1f} "
                f"{mfu[0]:>6} {mfu[1]:>6}"
            )


if __name__ == "__main__":
    main()
