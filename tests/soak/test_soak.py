"""The CI soak: `streamer soak` for 2 minutes with every fault type in rotation (a fault every 12 s) against
the real daemon, the network source fed by a sender process, OBS headless (installed by `make test`),
Twitch on the local fake. Asserts the bounds of issue 15: no output gap over 2 frame periods except
across the SIGKILL restart, nothing the daemon took lost from its store, the recording playable (up to
each fault), RSS and threads bounded (report.RSS_GROWTH_LIMIT_MB, THREAD_GROWTH_LIMIT), and every fault
recovered. About 3 minutes on a 2-core machine; the report is kept in test-artifacts/soak/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.soak.faults import NAMES
from streamer.soak.report import GAP_LIMIT_PERIODS, RSS_GROWTH_LIMIT_MB
from streamer.testing.obs_headless import missing_tools

pytestmark = [pytest.mark.slow, pytest.mark.obs, pytest.mark.timeout(960)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "soak"


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("soak")
    run = subprocess.run(
        # 5 fps (bound 400 ms): CI's 2 cores also run the sender, OBS and this test; at 10 fps a 200 ms bound was
        # crossed once at load average 5.6 (model_exception's model rebuild, 238 ms; docs/reliability.md)
        [sys.executable, "-m", "streamer", "soak", "--minutes", "2", "--fault-every", "12", "--fps", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in ("soak.md", "soak.json"):  # kept for whoever reads a CI failure
        if (out / name).exists():
            shutil.copy(out / name, ARTIFACTS / name)
    shutil.copytree(out / "logs", ARTIFACTS / "logs", dirs_exist_ok=True)
    assert (out / "soak.json").exists(), f"the soak did not finish (exit {run.returncode}):\n{run.stderr[-4000:]}"
    result = json.loads((out / "soak.json").read_text())
    result["exit_code"] = run.returncode
    return result


def test_every_fault_type_was_injected_and_recovered(soak):
    expected = set(NAMES) - ({"obs"} if missing_tools() else set())  # OBS: in CI `make test` installs it
    injected = {f["fault"] for f in soak["faults"]}
    assert injected == expected, f"missing {expected - injected}; skipped: {soak['skipped']}"
    assert soak["options"]["source"] == "network"  # so the sender fault is covered
    unrecovered = [(f["fault"], f["details"], f["error"]) for f in soak["faults"] if f["recovery_s"] is None]
    assert not unrecovered


def test_no_output_gap_over_two_frame_periods_except_the_sigkill_restart(soak):
    limit_ms = GAP_LIMIT_PERIODS * 1000 / soak["options"]["fps"]
    assert {f["fault"] for f in soak["faults"] if f["outage"]} == {"sigkill"}
    over = [
        f"{f['fault']}: {f['worst_gap_ms']:.0f} ms, {f['worst_gap_after_s']} s after it, load average up to {f['load_max']}"
        for f in soak["faults"]
        if not f["outage"] and f["worst_gap_ms"] > limit_ms
    ]
    if soak["baseline_worst_gap_ms"] > limit_ms:
        over.append(f"baseline: {soak['baseline_worst_gap_ms']:.0f} ms")
    # the load average says whether other work on the machine was competing for its 2 cores
    assert not over, f"output gaps over {limit_ms:.0f} ms: {over}"


def test_nothing_stored_is_lost(soak):
    assert soak["verdict"]["nothing lost"]["ok"], soak["verdict"]["nothing lost"]["detail"]
    taken = soak["ledger"]["taken"]
    assert min(taken.get(k, 0) for k in ("prompt", "proposal", "approval", "vote", "audit")) > 5, taken


def test_the_recording_is_playable_up_to_each_fault(soak):
    assert len(soak["recording"]) >= 3  # the disk-full and the SIGKILL faults each start a new segment
    assert all(s["playable"] for s in soak["recording"]), soak["recording"]
    assert all(f["playable_to_fault"] for f in soak["faults"]), [(f["fault"], f["segment"]) for f in soak["faults"]]


def test_rss_and_threads_stay_bounded(soak):
    runs = [r for r in soak["rss"]["runs"] if r["settled"]]
    assert runs, soak["rss"]
    assert all(r["rss_growth_mb"] <= RSS_GROWTH_LIMIT_MB for r in runs), runs
    assert soak["verdict"]["threads bounded"]["ok"], soak["verdict"]["threads bounded"]["detail"]


def test_the_command_says_the_verdict_in_its_exit_status(soak):
    assert soak["exit_code"] == (0 if all(v["ok"] for v in soak["verdict"].values()) else 1)
