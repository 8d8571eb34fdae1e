# A short issue-17 call for the folded o projection (kernels/prompt_projection.py). The seventeenth session
# timed its first two versions: 24 and 16.6 us a call at W1, against 12.8 us for cuBLAS's 1536 x 1536
# matmul it replaces (the second: every load of P a scalar 2-byte one, outside the pipeline). HEAD's
# version (84e5a83: 16-byte cp.async loads, only the key steps up to the prompt's last key, prompts up
# to 127 tokens) is untimed: run this first. If HEAD is not faster than the fold off here, remove the
# fold (docs/benchmarks.md, "The cross-attention's o projection folded", says what it is).
# Each step is capped by what is left of a BUDGET (default 480 s):
# 1. the GPU tests of the projection kernel at W1's shapes and of the fast path (bf16 and fp8);
# 2. the whole W1 chunk, bf16, alternated: HEAD (the fold) against FusedOps.PROMPT_FOLD=False;
# 3. the same with prompts of 40 tokens (folded in two key steps) and 150 (not folded: the kernel's
#    unfolded path against cuBLAS), one round each;
# 4. the same in fp8, one round;
# 5. the W1 bf16 profile (the kernel's time per call).
# Run with carry [".whl"]:  source tools/device/prepare.sh && OUT=$OUT bash tools/device/call_issue17_fold.sh
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-480}
source "$(dirname "${BASH_SOURCE[0]}")/budget.sh"

step "gpu tests: the projection kernel, the fast path"
timeout "$(cap 80)" python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore -m "gpu and not slow" \
  tests/kernels/test_prompt_projection.py tests/model/test_fast_path.py 2>&1 | tail -30

step "W1 whole chunk, bf16: HEAD (the fold), the fold off"
timeout "$(cap 140)" python3 tools/device/ab.py --rounds "${ROUNDS:-2}" --timeout 70 --json "$OUT/ab_w1_fold.json" \
  --variant head=. --variant no-fold=.:streamer.model.fast.ops:FusedOps.PROMPT_FOLD=False \
  -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json

# Longer prompts (the bench's text layout: a token per four characters). 40 tokens fold in two key
# steps per head; 150 tokens do not fold at all, and HEAD's kernel then multiplies the output by the
# weight itself (a Triton matmul, no TMA) where the fold off has cuBLAS's. (No commas or colons in a
# prompt: ab.py's variant syntax splits on them.)
P40="a watercolour painting of a quiet harbour town at dawn with fishing boats and gulls over calm water and soft pink light on old stone houses along the pier"
P150="$P40 $P40 $P40 $P40"
for run in "40:$P40" "150:$P150"; do
  n=${run%%:*}; text="'${run#*:}'"
  step "W1 whole chunk, bf16, a $n-token prompt: HEAD, the fold off"
  timeout "$(cap 70)" python3 tools/device/ab.py --rounds 1 --timeout 70 --json "$OUT/ab_w1_prompt$n.json" \
    --variant "head-$n=.:streamer.bench.model:BENCH_PROMPT=$text" \
    --variant "no-fold-$n=.:streamer.bench.model:BENCH_PROMPT=$text,streamer.model.fast.ops:FusedOps.PROMPT_FOLD=False" \
    -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json
done

step "W1 whole chunk, fp8: HEAD (the fold), the fold off"
timeout "$(cap 70)" python3 tools/device/ab.py --rounds 1 --timeout 70 --json "$OUT/ab_w1_fp8_fold.json" \
  --variant head=. --variant no-fold=.:streamer.model.fast.ops:FusedOps.PROMPT_FOLD=False \
  -- bench model W1 --variants fast --dtype fp8 --iters 40 --json

step "W1 bf16 profile"
timeout "$(cap 45)" python3 -m streamer.bench.model_profile W1 --dtype bfloat16 --ops > "$OUT/profile_w1_bf16.txt" 2>&1
head -24 "$OUT/profile_w1_bf16.txt"
step "done"
