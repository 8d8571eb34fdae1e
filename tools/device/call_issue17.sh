# The issue-17 device call of the fifteenth session, most needed first (each step is capped by what is
# left of a 570 s budget, so a slow step cannot cost the summary of the next):
# 1. every attention config at W1 (W2 near the end), the overlapped loops (`-ov`, FlashConfig.overlap) and the
#    merge done by each shared tile's last program (`-im`, FlashConfig.inline_merge) among them, each
#    checked against fp32 first;
# 2. the fp8 fused-DiT test (failed twice, message lost), unfiltered: short, so before the A/B;
# 3. the whole W1 chunk, bf16, alternated: HEAD's default attention config against the fastest other
#    Triton config of step 1 (chosen here from its JSON, through $STREAMER_FLASH_CONFIG);
# 4. the GPU tests of the attention kernel (the new configs at W1 and W2) and of the fast path;
# 5. attention at W2, the codec at W1, W1 in fp8 and its profile.
#
# Here, first: `bash tools/device/fetch_wheels.sh` (the .whl folder), and `bash tools/device/compile_check.sh`
# when a kernel changed. Then one call (under 10 minutes): run with carry [".whl"] and the command
#   source tools/device/prepare.sh && OUT=$OUT bash tools/device/call_issue17.sh
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-570}  # a call with less device time left: BUDGET=300 ROUNDS=1 (the A/B alternated once)
step() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s in)"; }
cap() {  # the smaller of $1 and what is left of the budget (at least 5 s)
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"
}

step "attention at W1, every config"
timeout "$(cap 150)" python3 -m streamer_kernels.bench attention --shapes W1 --json "$OUT/attention.json" 2>&1 | tail -24

BEST=$(python3 - "$OUT/attention.json" <<'EOF' 2>/dev/null
import json, sys
from streamer_kernels.flash_attention import DEFAULT_CONFIG
res = json.load(open(sys.argv[1]))
rows = next(v for k, v in res["shapes"].items() if k.startswith("W1"))["candidates"]
timed = {n.removeprefix("triton "): r["ms"] for n, r in rows.items() if n.startswith("triton ") and "ms" in r}
timed.pop(DEFAULT_CONFIG.name, None)
print(min(timed, key=timed.__getitem__) if timed else "")
EOF
)
step "the fp8 fused-DiT test"
timeout "$(cap 60)" python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore \
  "tests/model/test_fast_path.py::test_fused_dit_matches_eager_through_cache_fill_and_steady_state" 2>&1 | tail -40

step "W1 whole chunk, bf16: default attention config vs ${BEST:-none}"
if [ -n "$BEST" ]; then
  timeout "$(cap 190)" python3 tools/device/ab.py --rounds "${ROUNDS:-2}" --timeout 80 --json "$OUT/ab_w1.json" \
    --variant head=. --variant "$BEST=.:env:STREAMER_FLASH_CONFIG=$BEST" \
    -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json
else
  echo "no other timed config in $OUT/attention.json"
fi

step "gpu tests"
timeout "$(cap 110)" python3 -m pytest -q -p no:cacheprovider --tb=line -m "gpu and not slow" \
  tests/kernels/test_flash_attention.py tests/model/test_fast_path.py tests/model/test_fast_vae_fused.py \
  tests/kernels/test_relu_conv_out.py tests/kernels/test_kv_commit.py 2>&1 | tail -20

step "attention at W2, every config"
timeout "$(cap 120)" python3 -m streamer_kernels.bench attention --shapes W2 --json "$OUT/attention_w2.json" 2>&1 | tail -24
step "codec W1"
timeout "$(cap 50)" python3 -m streamer.bench.vae_speed W1 --json "$OUT/vae.json" 2>&1 | tail -17
step "W1 fp8 (HEAD)"
timeout "$(cap 45)" python3 -m streamer bench model W1 --variants fast --dtype fp8 --iters 40 2>&1 | tail -4
step "W1 fp8 profile (last profiled in the twelfth session)"
timeout "$(cap 70)" python3 -m streamer.bench.model_profile W1 --dtype fp8 --ops 2>&1 | tail -40
step "done"
