# The issue-17 device runs still pending after the fourteenth session (docs/benchmarks.md, "W1 from 35.0
# to 32.9 ms"), most needed first: the GPU tests that call's pytest timeout cut or that failed (the fp8
# fused-DiT test's message), the codec bench at W1 with the padded first conv, and the whole W1 chunk of
# HEAD against 7fc00ca (32.89 / 32.93 ms with q in [B, S, H, D] that day), alternated, bf16 and fp8.
#
# Here, first (.device-carry is ignored, so the anchor tree is made again each session; and a changed
# kernel goes through `bash tools/device/compile_check.sh`, the device's Triton, before any call):
#   mkdir -p .device-carry && git archive 7fc00ca streamer kernels overlays \
#     ':(exclude)streamer/model/embedded' | gzip -1 > .device-carry/7fc00ca.tar.gz
#   bash tools/device/fetch_wheels.sh
# Then one call (about 8 minutes): run with carry [".whl", ".device-carry"] and the command
#   source tools/device/prepare.sh && OUT=$OUT bash tools/device/call_issue17.sh
set -u
T0=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s in)"; }
mkdir -p .device-carry/trees/7fc00ca && tar xzf .device-carry/7fc00ca.tar.gz -C .device-carry/trees/7fc00ca
step "codec W1 (equality against the fp32 codec first)"
timeout 55 python3 -m streamer.bench.vae_speed W1 --json $OUT/vae.json 2>&1 | tail -17
step "the fp8 fused-DiT test"
timeout 45 python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore \
  "tests/model/test_fast_path.py::test_fused_dit_matches_eager_through_cache_fill_and_steady_state" 2>&1 | tail -40
step "gpu tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -m "gpu and not slow" tests/model/test_fast_path.py \
  tests/model/test_fast_vae_fused.py tests/kernels/test_relu_conv_out.py tests/kernels/test_kv_commit.py \
  tests/kernels/test_qk_norm_rope.py tests/model/test_fp8_fused_inputs.py 2>&1 | tail -20
step "W1 A/B, bf16"
timeout 160 python3 tools/device/ab.py --rounds 2 --timeout 75 --json $OUT/ab_w1.json \
  --variant head=. --variant c7fc00ca=.device-carry/trees/7fc00ca \
  -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json
step "W1 fp8 (HEAD)"
timeout 45 python3 -m streamer bench model W1 --variants fast --dtype fp8 --iters 40 2>&1 | tail -4
step "done"
