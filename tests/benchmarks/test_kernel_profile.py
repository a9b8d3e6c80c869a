"""benchmarks/kernel_profile.py: kernels sorted into kinds by name (the profiles' "what is not a
matmul" sums)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from kernel_profile import kernel_kind


def test_kernel_kinds_from_real_kernel_names() -> None:
    # names as torch.profiler reported them on an H100 (results/profile_train_140m_h100_2026-12-05.txt)
    assert kernel_kind("nvjet_sm90_tst_192x192_64x3_1x2_h_bz_coopB_NTN") == "matmul"
    assert kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26") == "attention"
    assert (
        kernel_kind("triton_poi_fused__unsafe_view_cat_mul_silu_silu_backward_split_view_2")
        == "compiled (triton)"
    )
    assert (
        kernel_kind("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedOpti")
        == "optimizer"
    )
    assert (
        kernel_kind("void at::native::vectorized_elementwise_kernel<4, at::native::exp_kernel_cuda")
        == "other"
    )
    assert kernel_kind("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL") == "communication"
