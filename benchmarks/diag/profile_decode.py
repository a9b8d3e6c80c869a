"""Decode-step diagnostics: steps/s of our Generator under several inductor option sets,
plus the top GPU kernels of one configuration.

    python benchmarks/diag/profile_decode.py 140m:1:128:A,B,C 950m:1:128:B --profile 950m:B
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model import model as model_module

DEFAULT_MIN_SLOTS = model_module.DECODE_MATMUL_MIN_SLOTS

VARIANTS = {
    "A": {"triton.cudagraphs": True, "coordinate_descent_tuning": False},
    "B": {},  # the Generator's defaults
    "C": {"max_autotune": True, "max_autotune_gemm_backends": "TRITON,ATEN"},
    "D": {},  # defaults, with decode attention as plain matmuls at every cache length
    "E": {},  # defaults, with batch-1 linears as matrix-vector products (cuBLAS gemv)
    "F": {"combo_kernels": True},  # horizontal fusion of independent kernels
    "G": {"max_autotune": True, "max_autotune_gemm_backends": "TRITON,ATEN", "epilogue_fusion": True},
    "H": {"combo_kernels": True, "coordinate_descent_tuning": True},
    # coordinate-descent tuning (batch-1 linears become Triton reductions fused with their
    # neighbours), except linears of >= 8M weights, kept on cuBLAS as an opaque op (I) / LM head only (J)
    "I": {"coordinate_descent_tuning": True},
    "J": {"coordinate_descent_tuning": True},
}
OPAQUE_MIN_WEIGHTS = {"I": 8 << 20, "J": 64 << 20}
_LINEAR_FORWARD = torch.nn.Linear.forward


@torch.library.custom_op("mllm_diag::linear", mutates_args=())
def _opaque_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, w)


@_opaque_linear.register_fake
def _(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], w.shape[0])


def _opaque_forward(min_weights: int):
    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.weight.numel() >= min_weights and self.bias is None:
            return _opaque_linear(x, self.weight)
        return _LINEAR_FORWARD(self, x)

    return forward


def _gemv_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3 and x.shape[0] * x.shape[1] == 1:
        return torch.mv(self.weight, x.reshape(-1)).view(1, 1, -1)
    return _LINEAR_FORWARD(self, x)


N_TOKENS = 128


def steps_per_s(gen: Generator, prompts: list[list[int]], n: int = N_TOKENS) -> float:
    params = SamplingParams(max_new_tokens=n, stop_token_ids=())
    gen.generate(prompts, params)
    gen.generate(prompts, params)
    torch.cuda.synchronize()
    t = time.perf_counter()
    gen.generate(prompts, params)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("specs", nargs="+", help="preset:batch:prompt_len:variants")
    p.add_argument("--profile", default=None, help="preset:variant to profile, e.g. 950m:A")
    args = p.parse_args()
    rows = []
    for spec in args.specs:
        name, batch, plen, variants = spec.split(":")
        model = build_model(preset(name, long_context=True), device="cuda", dtype=torch.bfloat16, seed=0)
        prompts = torch.randint(0, 128000, (int(batch), int(plen))).tolist()
        for v in variants.split(","):
            t0 = time.perf_counter()
            model_module.DECODE_MATMUL_MIN_SLOTS = 0 if v == "D" else DEFAULT_MIN_SLOTS
            torch.nn.Linear.forward = _gemv_forward if v == "E" else _LINEAR_FORWARD
            if v in OPAQUE_MIN_WEIGHTS:
                torch.nn.Linear.forward = _opaque_forward(OPAQUE_MIN_WEIGHTS[v])
            gen = Generator(model, compile=True, compile_options=VARIANTS[v])
            rate = steps_per_s(gen, prompts)
            rows.append((name, batch, plen, v, rate, time.perf_counter() - t0))
            print(rows[-1], flush=True)
            if args.profile == f"{name}:{v}":  # same shapes as the timed runs: nothing recompiles
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    gen.generate(prompts, SamplingParams(max_new_tokens=N_TOKENS, stop_token_ids=()))
                    torch.cuda.synchronize()
                print(f"per-step kernels of {spec} variant {v} ({N_TOKENS} steps):")
                events = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
                for e in events[:22]:
                    per_step = e.self_device_time_total / N_TOKENS
                    print(f"{per_step:9.1f} us/step {e.count / N_TOKENS:6.1f} calls/step  {e.key[:110]}")
            torch._dynamo.reset()
    print("preset batch prompt variant steps/s wall_s")
    for r in rows:
        print(f"{r[0]:>6} {r[1]:>5} {r[2]:>6} {r[3]:>7} {r[4]:8.1f} {r[5]:6.1f}")


if __name__ == "__main__":
    main()
