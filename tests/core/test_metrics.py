from streamer.metrics import Metrics, percentile


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
