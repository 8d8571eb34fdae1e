# On the lent GPU machine, first thing in a call (`source tools/device/prepare.sh && ...`, with .whl
# carried): install the wheels of fetch_wheels.sh into /tmp/site (the image's own torch and triton are
# kept), make the checkout importable with its kernels and overlays packages, and say what the card is.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "the wheels did not install: run tools/device/fetch_wheels.sh here and carry .whl"; return 1; }
ln -sfn "$PWD/kernels" /tmp/site/streamer_kernels
ln -sfn "$PWD/overlays" /tmp/site/streamer_overlays
# the looks' prompts, encoded here by fetch_wheels.sh (the MiniLM package cannot travel)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=$PWD/.whl/xdg
python3 -c "import streamer, streamer_kernels, streamer_overlays, torch, triton; \
print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" || return 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
