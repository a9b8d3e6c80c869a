"""FP8 training (`fp8: tensorwise | rowwise` in a train recipe): the decoder layers' linears
compute their matmuls in float8 through torchao's `Float8Linear`; the embedding, which is also
the tied LM head, the norms and attention stay in bf16, and the master weights and optimizer
state stay fp32 as in bf16 training.

Recipes (torchao's names): `tensorwise` scales each tensor by one dynamic factor (fastest; with
FSDP2 the all-gather stays bf16), `rowwise` one factor per row (more accurate where activations
have outlier rows). Float8 matmuls run on GPUs of compute capability >= 8.9 (H100, H200, L4,
RTX 40xx); torchao emulates them elsewhere (slow, for tests). Apply before `torch.compile`, which
fuses the casts and scales into the surrounding kernels: without it FP8 is slower than bf16.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

Fp8Recipe = Literal["none", "tensorwise", "rowwise"]
# torchao's float8 matmul needs both dims of the weight divisible by 16
_ALIGN = 16


def _eligible(module: nn.Module, fqn: str) -> bool:
    return (
        isinstance(module, nn.Linear)
        and module.in_features % _ALIGN == 0
        and module.out_features % _ALIGN == 0
    )


def convert_to_float8(layers: nn.ModuleList, recipe: Fp8Recipe) -> int:
    """Swap every eligible `nn.Linear` under `layers` (the decoder layers) for a torchao
    `Float8Linear` in place; returns how many were swapped. Parameter names do not change, so
    checkpoints and exports are the same as a bf16 run's."""
    if recipe == "none":
        return 0
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        from torchao.float8.float8_linear import Float8Linear
    except ImportError as e:
        raise RuntimeError("fp8 training needs torchao: pip install 'torchao>=0.18'") from e
    linears = sum(isinstance(m, nn.Linear) for m in layers.modules())
    convert_to_float8_training(
        layers, config=Float8LinearConfig.from_recipe_name(recipe), module_filter_fn=_eligible
    )
    swapped = sum(isinstance(m, Float8Linear) for m in layers.modules())
    if swapped == 0 and linears:
        raise ValueError(f"fp8: none of the {linears} linears has dims divisible by {_ALIGN}")
    return swapped
