# The kernels' sm_90 compile tests (tests/kernels: marked slow, "compiles ... hopper") run with the device
# image's Triton, not this checkout's: the device had 3.6 on 2026-12-07 while .venv has 3.9, and a kernel
# that 3.9 compiled failed on 3.6 (2e7158a: PassManager::run failed in TritonGPUPipeline), costing a
# device call. Run it before a call that brings a new or changed kernel; no GPU needed (a minute here).
#
#   bash tools/device/compile_check.sh        # TRITON_DEVICE=3.6.0 by default; prepare.sh prints the device's
#
# Makes .triton-device/ (ignored) once: CPU torch, that Triton, pytest.
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
grep -qx '/.triton-device/' .gitignore || { echo ".triton-device/ is not ignored by .gitignore"; exit 1; }
V=${TRITON_DEVICE:-3.6.0}
T=.triton-device
if [ "$($T/bin/python -c 'import triton; print(triton.__version__)' 2>/dev/null)" != "$V" ]; then
  rm -rf "$T" && python3 -m venv "$T"
  "$T/bin/pip" install -q "torch==2.13.0" "triton==$V" numpy pytest pytest-timeout
fi
mkdir -p "$T/links" && ln -sfn "$PWD/kernels" "$T/links/streamer_kernels"
PYTHONPATH="$PWD/$T/links:$PWD" "$T/bin/python" -m pytest -q -p no:cacheprovider -m slow tests/kernels \
  -k "compiles or hopper"
