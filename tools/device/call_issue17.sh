# The issue-17 device call of the seventeenth session, most needed first (each step is capped by what is
# left of a 540 s budget, so a slow step cannot cost the summary of the next):
# 1. the GPU tests of the cross-attention kernels (kernels/prompt_attention.py, and the folded o
#    projection, kernels/prompt_projection.py) at W1's shapes, then of the fast path (graph replay
#    against eager, fp8 included) and the stream-K kernel's default config;
# 2. W1's cross-attention alone: cuDNN / flash SDPA over all 512 keys against the prompt kernel over the
#    distinct ones, for prompts of 7, 77 and 512 tokens (`bench attention --shapes "W1 cross"`);
# 3. the whole W1 chunk, bf16, alternated: HEAD (prompt kernel + fold), the fold off
#    (FusedOps.PROMPT_FOLD), the prompt kernel off (FusedOps.PROMPT_ATTENTION: cuDNN over 512 keys);
# 4. W1 fp8: HEAD (the fold made from the dequantized o weight) against the fold off;
# 5. the fp8 quality gate on the trained tiny model, now with a prompt applied (it never had one), and
#    with the fold in the fp8 path;
# 6. the W1 bf16 profile (the last one is the fourteenth session's).
#
# Here, first: `bash tools/device/fetch_wheels.sh` (the .whl folder), and `bash tools/device/compile_check.sh`
# when a kernel changed. Then one call (under 10 minutes): run with carry [".whl"] and the command
#   source tools/device/prepare.sh && OUT=$OUT bash tools/device/call_issue17.sh
# (Earlier sessions' versions: git log -p on this file.)
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-540}  # a call with less device time left: BUDGET=300 ROUNDS=1 (the A/B alternated once)
source "$(dirname "${BASH_SOURCE[0]}")/budget.sh"

step "gpu tests: the prompt kernel, the fast path, the stream-K default"
timeout "$(cap 110)" python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore -m "gpu and not slow" \
  tests/kernels/test_prompt_attention.py tests/kernels/test_prompt_projection.py tests/model/test_fast_path.py \
  2>&1 | tail -30
timeout "$(cap 50)" python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore -m "gpu and not slow" \
  tests/kernels/test_flash_attention.py -k "tma-im or graph_capture" 2>&1 | tail -10

step "W1 cross-attention alone"
timeout "$(cap 60)" python3 -m streamer_kernels.bench attention --shapes "W1 cross" --json "$OUT/cross.json" 2>&1 | tail -12

step "W1 whole chunk, bf16: HEAD, the fold off, the prompt kernel off"
timeout "$(cap 230)" python3 tools/device/ab.py --rounds "${ROUNDS:-2}" --timeout 80 --json "$OUT/ab_w1.json" \
  --variant head=. --variant no-fold=.:streamer.model.fast.ops:FusedOps.PROMPT_FOLD=False \
  --variant no-prompt-kernel=.:streamer.model.fast.ops:FusedOps.PROMPT_ATTENTION=False \
  -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json

step "W1 whole chunk, fp8: HEAD (the fold from the dequantized weight), the fold off"
timeout "$(cap 90)" python3 tools/device/ab.py --rounds 1 --timeout 80 --json "$OUT/ab_w1_fp8.json" \
  --variant head=. --variant no-fold=.:streamer.model.fast.ops:FusedOps.PROMPT_FOLD=False \
  -- bench model W1 --variants fast --dtype fp8 --iters 40 --json

step "the fp8 quality gate with text conditioning (before: none, the bench never applied a prompt)"
timeout "$(cap 90)" python3 -m streamer.bench.dtype_quality W3 --chunks 100 2>&1 | tail -8

step "W1 bf16 profile"
timeout "$(cap 70)" python3 -m streamer.bench.model_profile W1 --dtype bfloat16 --ops > "$OUT/profile_w1_bf16.txt" 2>&1
head -30 "$OUT/profile_w1_bf16.txt"  # the whole of it comes back in $OUT
step "done"
