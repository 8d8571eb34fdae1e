import time

import pytest

from streamer.metrics import Metrics, OutputGaps, percentile


def test_percentile_nearest_rank():
    assert percentile([], 50) == 0.0
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(range(101), 99) == 99


def test_snapshot_status_and_prometheus_text():
    m = Metrics(window=10)
    for i in range(20):
        m.latency(i / 1000)
        m.observe("engine", 0.005)
    m.count("drops_input", 3)
    s = m.snapshot()
    assert s["latency_p50_ms"] == 14.0  # only the last 10 samples (10..19 ms) are kept
    assert s["stages"]["engine"]["p99_ms"] == 5.0
    assert "drops 3" in m.status_line()
    text = m.prometheus_text()
    assert 'streamer_latency_seconds{quantile="0.99"} 0.019' in text
    assert "streamer_drops_input_total 3" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


def test_clear_latency_forgets_samples_but_not_counters():
    m = Metrics()
    m.latency(0.5)
    m.count("frames_out")
    m.clear_latency()
    m.latency(0.01)
    s = m.snapshot()
    assert s["latency_p99_ms"] == 10.0 and s["counters"]["frames_out"] == 1


def test_output_gaps_keep_the_longest_per_second_for_any_reader():
    gaps = OutputGaps()
    for t, wall in [(0.0, 100.2), (0.1, 100.3), (0.5, 100.7), (0.6, 100.8), (1.9, 102.1), (2.0, 102.2)]:
        gaps.handoff(t, wall)
    assert gaps.max_s == pytest.approx(1.3)
    recent = [(end, round(gap, 3)) for end, gap in gaps.recent()]
    assert recent == [(100.7, 0.4), (102.1, 1.3)]  # each second's longest gap, with when it ended
    assert gaps.recent() == gaps.recent()  # reading forgets nothing
    for i in range(200):  # only the last RECENT_S seconds are kept
        gaps.handoff(3.0 + i, 103.0 + i)
    assert len(gaps.recent()) == OutputGaps.RECENT_S


def test_handoffs_show_in_the_snapshot_and_prometheus_text():
    m = Metrics()
    m.handoff()
    time.sleep(0.05)
    m.handoff()
    s = m.snapshot()
    assert s["output_gap_max_ms"] >= 50 and s["output_gaps"][-1][1] >= 50
    assert "streamer_output_gap_max_seconds 0.0" in m.prometheus_text()
    assert "streamer_output_gap_recent_max_seconds 0.0" in m.prometheus_text()
