"""tools/startup_bench (issue 17 item 6, start-up to the first transformed frame): the layout writer's small
scale and its own checks, the page-cache probe and eviction, and the stage parser on lines of the H100 runs
of 2026-12-06 (docs/benchmarks.md, "Start-up (item 6) on the H100")."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tool_loader import load_tool

from streamer.config import load

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "startup_bench"


def _tool(name: str) -> ModuleType:
    """A script of tools/startup_bench."""
    return load_tool(f"startup_bench/{name}.py", f"startup_bench_{name}")


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(TOOLS / f"{name}.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_make_layout_small_writes_the_pulled_layout_that_its_own_checks_accept(tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    done = _script("make_layout", str(out), "--scale", "small", "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DiT ok" in done.stdout and "umT5 ok" in done.stdout and "TAEHV ok" in done.stdout
    for rel in ("Self-Forcing/checkpoints/self_forcing_dmd.pt", "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"):
        assert (out / rel).stat().st_size > 0
    assert (out / "Wan2.1-T2V-1.3B/google/umt5-xxl/tokenizer.json").is_file()
    settings = load(out / "pulled.toml")  # the project's own config checks
    assert settings.model.preset == "wan-1.3b" and Path(settings.model.checkpoint).is_file()

    tool = _tool("make_layout")
    dit, t5 = tool.configs("small")
    tool.check(out, dit, t5, "small")  # the checks the script ran, in this process: they pass ...
    with pytest.raises(SystemExit, match="umT5 layout read as"):  # ... and fail on sizes other than the file's
        tool.check(out, dit, dataclasses.replace(t5, layers=t5.layers + 1), "small")
    with pytest.raises(SystemExit, match="DiT file fails the checkpoint reader"):
        tool.check(out, dataclasses.replace(dit, num_layers=dit.num_layers + 1), t5, "small")


def _folder(kind: str, tmp_path: Path, tool: ModuleType) -> Path:
    """A folder on a disk-backed filesystem ("disk") or on tmpfs ("memory"), or a skip saying why not."""
    if kind == "disk":
        if (fs := tool.filesystem(str(tmp_path))) in tool.MEMORY_FILESYSTEMS:
            pytest.skip(f"pytest's tmp_path is on {fs}: no disk-backed folder to evict from")
        return tmp_path
    shm = Path("/dev/shm")
    if (fs := tool.filesystem(str(shm)) if shm.is_dir() else "absent") != "tmpfs":
        pytest.skip(f"/dev/shm is not a tmpfs here ({fs}): no memory filesystem to check the refusal on")
    return shm


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_page_cache_sees_a_fresh_file_and_evict_drops_it_where_the_kernel_can(kind: str, tmp_path: Path) -> None:
    tool = _tool("page_cache")
    path = _folder(kind, tmp_path, tool) / f"startup_bench_{tmp_path.name}.bin"
    try:
        path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, just written: every page is cached
        fresh = _script("page_cache", str(path))
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.strip().endswith("100 % in the page cache")
        evicted = _script("page_cache", "--evict", str(path))
        assert evicted.returncode == 0, evicted.stderr
        after = tool.resident(str(path))
        if kind == "disk":  # clean pages of a disk file: fsync + DONTNEED drops them
            assert after < 0.05, evicted.stdout
            assert " -> 0 % after fsync + FADV_DONTNEED" in evicted.stdout
        else:  # on tmpfs the pages are the file: they stay, and the tool says why
            assert after == 1.0
            assert "-> 100 %" in evicted.stdout and "cannot be dropped" in evicted.stdout
    finally:
        path.unlink(missing_ok=True)
    assert tool.filesystem("/proc/self") == "proc"


# The lines the stages come from, as run.py logged them on the H100 (from the runs' logs; long lines cut
# after what is matched), with some of the status lines between them.
RESTART_LOG = """\
   0.383 11:51:38 I streamer.app: streamer starting: source pattern, sinks null, transform model, 832x480 @ 30 fps
   3.260 in  27.1 fps | out  25.1 fps | engine    0.0 ms | latency p50    2.8 / p99   62.7 ms | drops 0 | repeats 4 | output drops 3 | passthrough (model loading…)
   3.275 11:51:40 I streamer.model.loading: model load   0% (0.0 s): preset wan-1.3b on cuda (bfloat16)
   7.706 11:51:45 I streamer.model.loading: model load  50% (4.4 s): DiT: self_forcing_dmd.pt: wan-1.3b, torch pickle (generator_ema)
   7.800 11:51:45 I streamer.model.loading: model load  70% (4.5 s): autoencoder: taew2_1.pth
   8.080 11:51:45 I streamer.model.text: umT5 text encoder: Wan layout at /tmp/pulled/Wan2.1-T2V-1.3B, 5.68 B params, torch.bfloat16 on cuda
   9.133 11:51:46 I streamer.model.umt5_layouts: umT5 load  80% (1.0 s): 235/242 tensors, 9.09/11.36 GB from models_t5_umt5-xxl-enc-bf16.pth
   9.355 11:51:47 I streamer.model.umt5_layouts: umT5 load 100% (1.3 s): 242/242 tensors, 11.36/11.36 GB from models_t5_umt5-xxl-enc-bf16.pth
   9.478 11:51:47 I streamer.model.loading: model load 100% (6.2 s): text encoder: umt5
  11.352 11:51:49 I streamer.model.fast.path: fast path: captured the chunk step as one CUDA graph in 0.08 s
  11.390 11:51:49 I streamer.model.fast.path: fast path ready: warm-up 1.58 s, graph capture 0.08 s
  11.390 fast path ready: warm-up 1.58 s, graph capture 0.08 s
  11.391 11:51:49 I streamer.model.builder: model ready in 8.3 s: model wan-1.3b 832x480 2 steps sequential, cuda bfloat16, fast
  11.391 11:51:49 I streamer.pipeline: model ready in 11.0 s: model wan-1.3b 832x480 2 steps sequential, cuda bfloat16, fast
  11.944 11:51:49 I streamer.pipeline: first transformed frame 11.6 s after start
  12.289 in  29.6 fps | out  28.8 fps | engine    0.0 ms | latency p50   87.8 / p99  247.8 ms | drops 14 | repeats 28 | output drops 20 | model wan-1.3b 832x480 2 steps
  15.794 [startup_run] exit 0 (SIGTERM 3 s after the first transformed frame)
"""
FROM_DISK_LOG = """\
   0.423 11:50:49 I streamer.app: streamer starting: source pattern, sinks null, transform model, 832x480 @ 30 fps
   3.296 11:50:51 I streamer.model.loading: model load   0% (0.0 s): preset wan-1.3b on cuda (bfloat16)
   9.631 11:50:58 I streamer.model.loading: model load  50% (6.4 s): DiT: self_forcing_dmd.pt: wan-1.3b, torch pickle (generator_ema)
   9.733 11:50:58 I streamer.model.loading: model load  70% (6.4 s): autoencoder: taew2_1.pth
  10.039 11:50:58 I streamer.model.text: umT5 text encoder: Wan layout at /tmp/pulled/Wan2.1-T2V-1.3B, 5.68 B params, torch.bfloat16 on cuda
  15.528 11:51:04 I streamer.model.umt5_layouts: umT5 load 100% (5.4 s): 242/242 tensors, 11.36/11.36 GB from models_t5_umt5-xxl-enc-bf16.pth
  15.584 11:51:04 I streamer.model.loading: model load 100% (12.3 s): text encoder: umt5
  22.732 11:51:11 I streamer.model.fast.path: fast path ready: warm-up 6.79 s, graph capture 0.08 s
  22.732 11:51:11 I streamer.model.builder: model ready in 19.6 s: model wan-1.3b 832x480 2 steps sequential, cuda bfloat16, fast
  22.732 11:51:11 I streamer.pipeline: model ready in 22.3 s: model wan-1.3b 832x480 2 steps sequential, cuda bfloat16, fast
  23.250 11:51:11 I streamer.pipeline: first transformed frame 22.8 s after start
  27.328 [startup_run] exit 0 (SIGTERM 3 s after the first transformed frame)
"""
# The CPU smoke test (make_layout.py --scale small, device_call.sh SCALE=small): eager warm-up, a warning;
# its umT5 placement line is left out here (a line that is absent gives None).
CPU_SMALL_LOG = """\
   0.273 12:11:31 I streamer.app: streamer starting: source pattern, sinks null, transform model, 64x64 @ 30 fps
   1.341 12:11:32 W streamer.model.loading: preset wan-1.3b on the CPU will be far too slow for live video; use a CUDA GPU or preset 'tiny'
   1.341 12:11:32 I streamer.model.loading: model load   0% (0.0 s): preset wan-1.3b on cpu (bfloat16)
   2.522 12:11:33 I streamer.model.loading: model load  50% (1.2 s): DiT: self_forcing_dmd.pt: custom, torch pickle (generator_ema)
   3.453 12:11:34 I streamer.model.loading: model load  70% (2.1 s): autoencoder: taew2_1.pth
   3.566 12:11:34 I streamer.model.umt5_layouts: umT5 load 100% (0.1 s): 22/22 tensors, 0.01/0.01 GB from models_t5_umt5-xxl-enc-bf16.pth
   3.567 12:11:34 I streamer.model.loading: model load 100% (2.2 s): text encoder: umt5
   6.783 12:11:38 I streamer.model.builder: model warm-up: 100% (2.56 s)
   6.783 12:11:38 I streamer.model.builder: model ready in 5.4 s: model wan-1.3b 64x64 2 steps sequential, cpu bfloat16, eager
   6.783 12:11:38 I streamer.pipeline: model ready in 6.5 s: model wan-1.3b 64x64 2 steps sequential, cpu bfloat16, eager
   7.653 12:11:38 I streamer.pipeline: first transformed frame 7.4 s after start
"""
# The CPU smoke test with umT5 read in the background (builder.py): its weights are read during the warm-up,
# and the builder says how long it then waited for them.
CPU_BACKGROUND_LOG = """\
   0.318 13:41:11 I streamer.app: streamer starting: source pattern, sinks null, transform model, 64x64 @ 30 fps
   1.644 13:41:12 I streamer.model.loading: model load   0% (0.0 s): preset wan-1.3b on cpu (bfloat16)
   2.992 13:41:14 I streamer.model.loading: model load  50% (1.3 s): DiT: self_forcing_dmd.pt: custom, torch pickle (generator_ema)
   3.944 13:41:15 I streamer.model.loading: model load  70% (2.3 s): autoencoder: taew2_1.pth
   3.965 13:41:15 I streamer.model.loading: model load 100% (2.3 s): text encoder: umt5 (its weights still loading, in the background)
   3.989 13:41:15 I streamer.model.umt5_layouts: umT5 load 100% (0.0 s): 22/22 tensors, 0.01/0.01 GB from models_t5_umt5-xxl-enc-bf16.pth
   4.378 13:41:15 I streamer.model.builder: model warm-up: 100% (0.11 s)
   4.378 13:41:15 I streamer.model.builder: text encoder weights ready: waited 0.00 s for them after warm-up
   4.378 13:41:15 I streamer.model.builder: model ready in 2.7 s: model wan-1.3b 64x64 2 steps sequential, cpu bfloat16, eager
   4.378 13:41:15 I streamer.pipeline: model ready in 4.1 s: model wan-1.3b 64x64 2 steps sequential, cpu bfloat16, eager
   4.860 13:41:15 I streamer.pipeline: first transformed frame 4.5 s after start
"""
# What the runs printed (docs/benchmarks.md's table); wall times re-read from the log's ms stamps may round
# 0.01 s apart from the in-run clock (the restart's loader start: 3.28 printed, 3.275 logged).
RESTART = {"loader_start_wall_s": 3.28, "dit_load_s": 4.4, "vae_load_s": 0.1, "umt5_stage_s": 1.7}
RESTART |= {"umt5_read_s": 1.3, "weights_total_s": 6.2, "warmup_s": 1.58, "capture_s": 0.08, "model_ready_s": 11.0}
RESTART |= {"first_frame_wall_s": 11.94, "first_frame_pipeline_s": 11.6, "engine_first_prompt_s": 0.44}
RESTART |= {"first_chunk_after_ready_s": 0.55, "daemon_up_wall_s": 0.38}
FROM_DISK = {"loader_start_wall_s": 3.3, "dit_load_s": 6.4, "vae_load_s": 0.0, "umt5_stage_s": 5.9}
FROM_DISK |= {"umt5_read_s": 5.4, "weights_total_s": 12.3, "warmup_s": 6.79, "capture_s": 0.08, "model_ready_s": 22.3}
FROM_DISK |= {"first_frame_wall_s": 23.25, "first_frame_pipeline_s": 22.8, "engine_first_prompt_s": 0.43}
FROM_DISK |= {"first_chunk_after_ready_s": 0.52, "daemon_up_wall_s": 0.42}
CPU_SMALL = {"dit_load_s": 1.2, "vae_load_s": 0.9, "weights_total_s": 2.2, "warmup_s": 2.56, "capture_s": None}
CPU_SMALL |= {"engine_first_prompt_s": 0.64, "first_frame_wall_s": 7.65, "umt5_placement": None}
CPU_BACKGROUND = {"dit_load_s": 1.3, "weights_total_s": 2.3, "umt5_stage_s": 0.0, "warmup_s": 0.11, "umt5_wait_s": 0.0}
CPU_BACKGROUND |= {"engine_first_prompt_s": 0.29, "model_ready_s": 4.1, "first_frame_wall_s": 4.86}


@pytest.mark.parametrize(
    ("log", "want"),
    [(RESTART_LOG, RESTART), (FROM_DISK_LOG, FROM_DISK), (CPU_SMALL_LOG, CPU_SMALL),
     (CPU_BACKGROUND_LOG, CPU_BACKGROUND)],
    ids=["h100-restart", "h100-from-disk", "cpu-small", "cpu-umt5-in-background"],
)
def test_stage_parser_gives_the_stages_the_runs_printed(log: str, want: dict[str, float | None]) -> None:
    tool = _tool("run")
    stages = dataclasses.asdict(tool.summarize(tool.read_log(log)))
    got = {key: stages[key] for key in want}
    assert got == {k: v if v is None or isinstance(v, str) else pytest.approx(v, abs=0.011) for k, v in want.items()}
    assert (stages["problems"] != []) == (log is CPU_SMALL_LOG)  # only this CPU run kept its warning
    assert (stages["umt5_wait_s"] is None) == (log is not CPU_BACKGROUND_LOG)
    if log in (RESTART_LOG, FROM_DISK_LOG):
        assert stages["umt5_placement"].endswith("5.68 B params, torch.bfloat16 on cuda")
        assert stages["dit_source"] == "self_forcing_dmd.pt: wan-1.3b, torch pickle (generator_ema)"


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", "import sys, time\n" + code]


@pytest.mark.parametrize("first", [True, False], ids=["after-first-frame", "at-the-limit"])
def test_run_stops_the_daemon_after_its_first_transformed_frame_or_at_the_limit(tmp_path: Path, first: bool) -> None:
    tool = _tool("run")
    line = "streamer.pipeline: first transformed frame 0.1 s after start" if first else "still loading"
    lines, rc = tool.run(_child(f"print({line!r}, flush=True)\ntime.sleep(60)"), tmp_path / "x.log", 0.2, 1.0)
    assert rc == -15  # SIGTERM, not the 60 s sleep's end
    want = "SIGTERM 0.2 s after the first transformed frame" if first else "SIGTERM at the 1 s limit"
    assert want in lines[-1][1]
    assert lines[-1][0] < 4.0
    assert tool.read_log((tmp_path / "x.log").read_text()) == [(round(t, 3), ln) for t, ln in lines]
