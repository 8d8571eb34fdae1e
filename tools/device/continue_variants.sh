# Continue a shipped tiny model on the GPU as five variants side by side, then evaluate them, in one call.
#
#   source tools/device/prepare.sh && bash tools/device/continue_variants.sh     # on the lent GPU (.whl carried)
#   DEVICE=cpu BATCH=2 WORKERS=0 FRAMES=2 MINUTES=0.3 EVAL_FRAMES=4 DRIFT_MIN=0.02 FAST= DTYPE=float32 \
#     PY=.venv/bin/python OUT=/tmp/cv bash tools/device/continue_variants.sh      # the same plumbing on a CPU
#
# Variants (all from INIT, v4.3's look weights: comic drawn 4 times in 11):
#   base               v4's conditioned settings (p_paired 0.75, paired levels 0.2-0.8) at a lower lr
#   focus              paired levels only 0.2-0.5, the band round tiny's shipped strength 0.45 (the model is
#                      told 0.35), and 9 paired frames in 10: the training put where the daemon streams
#   focus-no-history   focus without history augmentation   (the drift table: focus against it)
#   focus-no-shortcut  focus without shortcut distillation  (the steps table: focus against it)
#   focus-pixel        focus plus train.pixel_loss 0.2: L1 on the decoded prediction and its edges
# Then, side by side on the same card: quality at the shipped settings (INIT, base, focus, focus-pixel), drift over a
# 10-minute held-out watercolour stream (focus, focus-no-history) and quality at 1/2/4 steps (focus, focus-no-shortcut).
# What comes back in $OUT: base.tar, focus.tar and focus-pixel.tar (the weights, to evaluate on the CPU and ship) and
# results.tar.gz (every evaluation's JSON, contact sheets, training and evaluation logs).
set -u
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-128} WORKERS=${WORKERS:-4} FRAMES=${FRAMES:-4}
MINUTES=${MINUTES:-4.8} STEPS=${STEPS:-700} LR=${LR:-1.5e-4} DTYPE=${DTYPE:-bfloat16}
EVAL_FRAMES=${EVAL_FRAMES:-150} DRIFT_MIN=${DRIFT_MIN:-10} EVAL_CAP_S=${EVAL_CAP_S:-220} FAST=${FAST---fast-path}
INIT=${INIT:-$PWD/streamer/model/embedded/tiny}
VARIANTS=${VARIANTS:-base focus focus-no-history focus-no-shortcut focus-pixel}  # fewer: only their evaluations run
R=${RUNS:-$PWD/runs/variants}
OUT=${OUT:?set OUT to the folder that comes back}
mkdir -p "$R/cfg" "$R/logs" "$OUT"
export OMP_NUM_THREADS=2  # five trainers and their workers share the cores

write_cfg() {  # name, then extra TOML lines
  local name=$1; shift
  {
    echo '[train]'
    echo 'stage = "dit"'
    echo "init = \"$INIT\""
    echo "vae = \"$INIT/vae.safetensors\""
    echo "out_dir = \"$R/$name\""
    echo 'looks = ["noir", "neon", "comic", "comic", "comic", "comic", "sketch", "thermal", "sepia", "pixel", "watercolour"]'
    echo "width = 256"; echo "height = 256"; echo "frames = $FRAMES"; echo "batch = $BATCH"; echo "workers = $WORKERS"
    echo "steps = $STEPS"; echo "lr = $LR"; echo "warmup = 20"; echo "window = 3"; echo "sinks = 1"
    echo "save_every = 100"; echo "keep_checkpoints = 2"; echo "sample_every = 0"; echo "log_every = 10"
    echo "dtype = \"$DTYPE\""; echo "device = \"$DEVICE\""; echo "seed = 50"
    printf '%s\n' "$@"
  } >"$R/cfg/$name.toml"
}
write_cfg base 'p_paired = 0.75' 'paired_max_sigma = 0.8'
write_cfg focus 'p_paired = 0.9' 'paired_max_sigma = 0.5'
write_cfg focus-no-history 'p_paired = 0.9' 'paired_max_sigma = 0.5' 'p_history = 0.0'
write_cfg focus-no-shortcut 'p_paired = 0.9' 'paired_max_sigma = 0.5' 'p_shortcut = 0.0'
write_cfg focus-pixel 'p_paired = 0.9' 'paired_max_sigma = 0.5' 'pixel_loss = 0.2'

t0=$(date +%s)
pids=()
for v in $VARIANTS; do
  $PY -m streamer train -c "$R/cfg/$v.toml" --max-minutes "$MINUTES" >"$R/logs/train-$v.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || echo "a trainer failed (exit $?): see $R/logs"; done
echo "training done in $(( $(date +%s) - t0 )) s"
for v in $VARIANTS; do tail -n 2 "$R/logs/train-$v.log"; done

has() { [[ " $VARIANTS " == *" $1 "* ]]; }
ck() { echo "$R/$1/checkpoints/$(cat "$R/$1/checkpoints/latest")"; }  # latest: the newest folder's name
evaluate() {  # name, checkpoint, then evaluator arguments
  local name=$1 ckpt=$2; shift 2
  timeout "$EVAL_CAP_S" $PY -m streamer.train.evaluate --checkpoint "$ckpt" --vae "$INIT/vae.safetensors" \
    --device "$DEVICE" $FAST --set steps=1 --strength 0.45 --json "$R/eval-$name.json" "$@" \
    >"$R/logs/eval-$name.log" 2>&1 &
}
sheet=(--sheet-frames 2 --sheet-tile 160)
evaluate quality-init "$INIT" --mode quality --frames "$EVAL_FRAMES" --sheet "$R/sheet-init.png" "${sheet[@]}"
for v in base focus focus-pixel; do
  has $v && evaluate "quality-$v" "$(ck $v)" --mode quality --frames "$EVAL_FRAMES" --sheet "$R/sheet-$v.png" "${sheet[@]}"
done
if has focus && has focus-no-history; then
  for v in focus focus-no-history; do
    evaluate "drift-$v-watercolour" "$(ck $v)" --mode drift --minutes "$DRIFT_MIN" --looks watercolour
  done
fi
if has focus && has focus-no-shortcut; then
  for v in focus focus-no-shortcut; do evaluate "steps-$v" "$(ck $v)" --mode steps --frames "$EVAL_FRAMES"; done
fi
wait
echo "evaluations done at $(( $(date +%s) - t0 )) s"

pack() {  # the weights of a variant's newest checkpoint, without the optimizer state
  local d; d=$(ck "$1")
  tar -C "$d" -cf "$OUT/$1.tar" config.json model.safetensors $(cd "$d" && ls shortcut.safetensors 2>/dev/null)
}
for v in base focus focus-pixel; do has $v && pack $v; done
tar -C "$R" -czf "$OUT/results.tar.gz" cfg logs $(cd "$R" && ls eval-*.json sheet-*.png */log.jsonl 2>/dev/null)
ls -la "$OUT"
grep -H '^|' "$R"/logs/eval-*.log | sed "s#^$R/logs/##"  # every evaluator's table
