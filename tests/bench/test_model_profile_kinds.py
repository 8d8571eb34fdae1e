"""The W1 profile's kernel classes (streamer.bench.model_profile.kind_of) on kernel names an H100 profile
printed: our Triton attention must count as attention, not "other" (it did before its kernels were renamed)."""

import pytest

import streamer_kernels.flash_attention as flash
from streamer.bench.model_profile import kind_of
from streamer_kernels.fp8_quant import _quantize_rows_kernel


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (flash._flash_attn_fwd_kernel.__name__, "attention"),
        (flash._flash_attn_merge_kernel.__name__, "attention"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1_kernel0_0",
         "attention"),
        ("nvjet_sm90_tst_128x144_64x6_2x1_v_bz_coopA_bias_TNT", "matmul"),
        ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true>", "conv"),
        ("_gated_mod_ln_kernel", "fused triton"),
        (_quantize_rows_kernel.__name__, "fused triton"),  # the FP8 path's per-token quantizer
        ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "other"),
    ],
)
def test_kernel_kinds(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_op_rows_name_ops_with_their_shapes() -> None:
    """`--ops`: the profile's ops per chunk with input shapes (on a CPU profile the CPU time stands in)."""
    import torch

    from streamer.bench.model_profile import op_rows

    a, b = torch.randn(64, 32), torch.randn(32, 16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):  # two "chunks"
            torch.mm(a, b)
            torch.cat([a, a])
    rows = {(name, shapes): calls for name, shapes, ms, calls in op_rows(prof, chunks=2)}
    assert rows[("aten::mm", "[[64, 32], [32, 16]]")] == 1
    assert any(name == "aten::cat" and calls == 1 for (name, _), calls in rows.items())
