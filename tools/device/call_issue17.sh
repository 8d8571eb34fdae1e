# The issue-17 device runs the fourteenth session prepared, most needed first: GPU tests of the untested
# kernels and codec changes; the codec bench (each NHWC rewrite off vs on); the alternated W1 A/B (8239e27 = 35.42 ms last
# session; HEAD; HEAD with q in [B, S, H, D]); one round of HEAD preferring cuBLASLt and with TunableOp;
# the op profile; W2 bf16 and W1 fp8.
#
# Here, first (the tree of 8239e27, W1 35.42 ms on 2026-12-07, is the A/B's anchor; .device-carry is ignored):
#   mkdir -p .device-carry && git archive 8239e27 streamer kernels overlays \
#     ':(exclude)streamer/model/embedded' | gzip -1 > .device-carry/8239e27.tar.gz
#   bash tools/device/fetch_wheels.sh
# Then one call (about 9 minutes): run with carry [".whl", ".device-carry"] and the command
#   source tools/device/prepare.sh && OUT=$OUT bash tools/device/call_issue17.sh
set -u
T0=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s in)"; }
mkdir -p .device-carry/trees/8239e27 && tar xzf .device-carry/8239e27.tar.gz -C .device-carry/trees/8239e27
step "gpu tests"
timeout 75 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kv_commit.py tests/model/test_fast_cache.py \
  tests/model/test_fused_ops_affine.py tests/model/test_fast_ffn_epilogue.py tests/model/test_fast_path.py \
  "tests/model/test_fast_vae_fused.py::test_fused_codec_matches_on_the_gpu_in_bf16" tests/kernels/test_relu_conv_out.py 2>&1 | tail -25
step "codec"
timeout 80 python3 -m streamer.bench.vae_speed W1 W2 --json $OUT/vae.json 2>&1 | tail -34
step "W1 A/B"
timeout 220 python3 tools/device/ab.py --rounds 2 --timeout 80 --json $OUT/ab_w1.json \
  --variant head=. --variant c8239e27=.device-carry/trees/8239e27 \
  --variant head-bshd=.:streamer.model.fast.ops:FusedOps.Q_HEADS_FIRST=False \
  -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json
step "W1 BLAS choices"
timeout 110 python3 tools/device/ab.py --rounds 1 --timeout 60 --json $OUT/ab_blas.json \
  --variant head-cublaslt=.:env:TORCH_BLAS_PREFER_CUBLASLT=1 \
  --variant head-tunableop=.:env:PYTORCH_TUNABLEOP_ENABLED=1 \
  -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json
step "profile W1 ops"
timeout 60 python3 -m streamer.bench.model_profile W1 --ops > $OUT/profile.txt 2>&1; tail -45 $OUT/profile.txt
step "W2 bf16, W1 fp8 (HEAD)"
timeout 45 python3 -m streamer bench model W2 --variants fast --dtype bfloat16 --iters 40 2>&1 | tail -4
timeout 45 python3 -m streamer bench model W1 --variants fast --dtype fp8 --iters 40 2>&1 | tail -4
step "done"
