# Issue 17 item 6: `streamer run` to the first transformed frame from real-size files on disk, three starts.
#
#   OUT=/tmp/startup-results bash tools/startup_bench/device_call.sh      # from the checkout's root
#
# Needs a CUDA machine on which `$PY -m streamer` imports with streamer_kernels and streamer_overlays
# (`pip install -e ".[gpu,wan]"`, or PYTHONPATH set by the caller), ≈ 17 GB free under $PULLED on a real
# disk (on tmpfs the "read from disk" start cannot drop the files) and ≈ 12 GB of free RAM.
# Settings (environment): OUT (results, default /tmp/startup-bench), PULLED (the layout, default /tmp/pulled),
# PY (default python3), SCALE=small (tiny shapes: the same three starts as a CPU smoke test: 41 s on 2 cores),
# SKIP_WARM=1 (no third start), REUSE=1 (keep the layout an earlier run wrote under $PULLED: comparing two
# trees on one machine).
#
# On the lent GPU machine: `source tools/device/prepare.sh && OUT=$OUT bash tools/startup_bench/device_call.sh`
# (the wheels of tools/device/fetch_wheels.sh carried as .whl); the runs for docs/benchmarks.md
# ("Start-up (item 6) on the H100", 2026-12-06) did those same steps by hand, from a `git archive HEAD`
# snapshot, with XDG_CACHE_HOME and TORCHINDUCTOR_CACHE_DIR in the session's carried folder.
#
# Writes the `models pull self-forcing` layout with random values under $PULLED (make_layout.py), then three
# starts, each with a fresh prompt cache and store (run.py stops each 3 s after its first transformed frame):
#   startup_cached: files in the page cache (just written), fresh Triton cache
#   startup:        our files dropped from the page cache (fsync + FADV_DONTNEED), fresh Triton cache: item 6
#   startup_warm:   page cache and Triton cache warm: an ordinary restart
# Results: $OUT/<start>.log (every line stamped), $OUT/<start>.txt (the stage table + JSON), phase.log.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PY:-python3}
OUT=${OUT:-/tmp/startup-bench}
D=${PULLED:-/tmp/pulled}
export PYTHONUNBUFFERED=1  # run.py stamps each line when it arrives
mkdir -p "$OUT" "$D" || exit 1
$PY -c "import streamer, streamer_kernels, streamer_overlays" || { echo "streamer is not importable: see the header"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
date -u
TRITON=$(mktemp -d)  # two Triton caches: a fresh one for the first start, a second for "from disk" + restart
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/phase.log"; }
df -hT "$D" | tail -1; free -g | head -2
if [ -n "$REUSE" ] && [ -f "$D/pulled.toml" ]; then
  el "layout kept (REUSE)"
else
  timeout 300 $PY "$HERE/make_layout.py" "$D" --scale "${SCALE:-real}" > "$OUT/make_layout.log" 2>&1; rc=$?
  el "layout rc $rc"; tail -8 "$OUT/make_layout.log"; [ $rc = 0 ] || exit 1
fi
FILES=("$D/Self-Forcing/checkpoints/self_forcing_dmd.pt" "$D/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"
       "$D/taehv/taew2_1.pth")
start() {  # $1: name, $2: Triton cache folder
  rm -rf "$D/cache" "$D"/streamer.db*
  $PY "$HERE/page_cache.py" "${FILES[@]}" | sed 's/^/  /'
  TRITON_CACHE_DIR=$2 timeout 110 $PY "$HERE/run.py" --log "$OUT/$1.log" --grace 3 --limit 90 -- \
    $PY -m streamer run --config "$D/pulled.toml" --frames 2700 > "$OUT/$1.txt" 2>&1
  el "$1 rc $?"; tail -n +2 "$OUT/$1.txt"
}
start startup_cached "$TRITON/a"
timeout 90 $PY "$HERE/page_cache.py" --evict "${FILES[@]}" | tee "$OUT/evict.log"; el "evicted"
start startup "$TRITON/b"
[ -n "$SKIP_WARM" ] || start startup_warm "$TRITON/b"
rm -rf "$TRITON"
ls -la "$OUT"
