# Issue 14 on a lent GPU (one call, about 9 minutes on an H100): the shipped tiny model widened to take the
# input's luma (`streamer train widen-luma`; streamer/model/condition.py says why), continued side by side as
# luma-fp (v4.4's focus settings + pixel_loss 0.2) and luma-ink (+ pixel_dark_weight 20), then comic on the
# 1,200 held-out frames (eager fp32 on the GPU) for each one's newest checkpoint. A second call on the still
# warm machine resumes both (/tmp/dev survives while the machine is held). From the checkout's root:
#
#   source tools/device/prepare.sh && MINUTES=6 TESTS=1 bash tools/device/luma_variants.sh
#
# Returns $OUT/<variant>-step_N/ (config.json, model.safetensors, shortcut.safetensors, comic1200.json): eight
# files, what a lent machine sends back at most. Evaluate the better one on the CPU over all looks before
# shipping it (docs/training.md, "Evaluating a model").
set -x
D=/tmp/dev
mkdir -p $D
[ -d $D/l-init ] || python3 -m streamer train widen-luma streamer/model/embedded/tiny --out $D/l-init || exit 1
for v in fp ink; do
  cat > $D/$v.toml <<TOML
[train]
preset = "tiny"
init = "$D/l-init"
vae = "$PWD/streamer/model/embedded/tiny/vae.safetensors"
out_dir = "$D/$v"
looks = ["noir", "neon", "comic", "comic", "comic", "comic", "sketch", "thermal", "sepia", "pixel", "watercolour"]
width = 256
height = 256
frames = 4
batch = 64
workers = 6
device = "auto"
dtype = "bfloat16"
lr = 0.00015
warmup = 20
window = 3
sinks = 1
p_paired = 0.9
paired_max_sigma = 0.5
pixel_loss = 0.2
seed = 50
sample_every = 0
log_every = 5
save_every = 200
keep_checkpoints = 20
TOML
  [ $v = ink ] && echo "pixel_dark_weight = 20.0" >> $D/$v.toml
  python3 -m streamer train -c $D/$v.toml --steps 5000 --max-minutes ${MINUTES:-6} > $D/$v.log 2>&1 &
done
wait
for v in fp ink; do grep -v "Loading weights" $D/$v.log | tail -4; done
[ -n "$TESTS" ] && python3 -m pytest -q -m gpu -p no:cacheprovider tests/model/test_input_conditioned.py 2>&1 | tail -3
for v in fp ink; do d=$(ls -d $D/$v/checkpoints/step_* | tail -1); n=$v-$(basename $d); mkdir -p $OUT/$n
  cp $d/config.json $d/model.safetensors $d/shortcut.safetensors $OUT/$n/
  python3 -m streamer.train.evaluate --mode quality --looks comic --frames 1200 --checkpoint $d --label $n \
    --vae streamer/model/embedded/tiny/vae.safetensors --device cuda --json $OUT/$n/comic1200.json 2>&1 | grep "| comic"
done
ls -la $OUT/*
