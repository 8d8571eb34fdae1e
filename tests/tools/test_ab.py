"""tools/device/ab.py (the alternated A/B on the device): variant parsing, and one real round on the CPU
with two trees, one of them with a class switch, each process importing its own tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tool_loader import TOOLS, load_tool

ROOT = TOOLS.parent
ab = load_tool("device/ab.py", "device_ab")


def test_variants_parse_and_bad_ones_are_refused(tmp_path: Path) -> None:
    label, tree, sets = ab.parse_variant(f"x={ROOT}:streamer.model.fast.ops:FusedOps.Q_HEADS_FIRST=False")
    assert (label, tree, sets) == ("x", ROOT, ["streamer.model.fast.ops:FusedOps.Q_HEADS_FIRST=False"])
    assert ab.parse_variant(f"y={ROOT}")[2] == []
    assert ab.parse_variant(f"z={ROOT}:env:TORCH_BLAS_PREFER_CUBLASLT=1")[2] == ["env:TORCH_BLAS_PREFER_CUBLASLT=1"]
    for bad in ("=.", f"x={tmp_path}", f"x={ROOT}:no_colon=1", f"x={ROOT}:m:A.b=not a literal"):
        with pytest.raises(SystemExit):
            ab.parse_variant(bad)


def test_last_json_skips_log_lines() -> None:
    assert ab.last_json('{"a": 1}') == {"a": 1}
    assert ab.last_json('log {x}\n{\n "b": [1, 2]\n}\n') == {"b": [1, 2]}


@pytest.mark.slow
def test_one_round_on_the_cpu_runs_each_tree_with_its_settings(tmp_path: Path) -> None:
    other = tmp_path / "tree"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD", "streamer", "kernels", "overlays"],
        capture_output=True, check=True,
    )  # fmt: skip
    other.mkdir()
    subprocess.run(["tar", "x", "-C", str(other)], input=archive.stdout, check=True)
    out = tmp_path / "ab.json"
    run = subprocess.run(
        [
            sys.executable, str(TOOLS / "device" / "ab.py"), "--rounds", "1", "--json", str(out),
            "--variant", f"here={ROOT}", "--variant", f"there={other}:streamer.model.fast.ops:FusedOps.GELU_EPILOGUE=False",
            "--", "bench", "model", "W3", "--variants", "eager", "--iters", "1", "--device", "cpu", "--json",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    here, there = json.loads(out.read_text())
    assert str(ROOT / "streamer") in here["imports"][0] and str(other / "streamer") in there["imports"][0]
    assert here["settings"] == [] and there["settings"] == ["streamer.model.fast.ops:FusedOps.GELU_EPILOGUE=False"]
    for r in (here, there):
        assert r["report"]["workload"] == "W3" and r["report"]["variants"][0]["ms_p50"] > 0
    assert "round 1 | here" in run.stdout and "round 1 | there" in run.stdout
