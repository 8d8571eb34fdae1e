"""`streamer doctor`: one line per check with OK/WARN/FAIL and the fix; non-zero exit on FAIL."""

from pathlib import Path

from streamer.cli import main
from streamer.doctor import Check, run_checks


def config(tmp_path: Path, source: str) -> Path:
    p = tmp_path / "d.toml"
    p.write_text(
        f"""
[video]
width = 160
height = 96
[source]
{source}
[sinks]
enabled = ["virtualcam", "record"]
[sinks.record]
path = "{tmp_path / 'rec.mp4'}"
[store]
path = "{tmp_path / 'd.db'}"
[dashboard]
port = 0
"""
    )
    return p


def test_doctor_reports_each_part_and_passes_on_a_working_config(tmp_path, capsys):
    code = main(["doctor", "--config", str(config(tmp_path, 'kind = "pattern"'))])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("python", "package av", "package torch", "torch device", "source", "virtualcam"):
        assert any(name in line for line in out.splitlines() if line.startswith("[")), (name, out)
    assert "[WARN] " in out and "modprobe v4l2loopback" in out  # the missing virtual camera, with its fix
    assert "FAIL" not in out.split("checks:")[0].replace("0 FAIL", "")


def test_doctor_fails_with_a_fix_when_the_source_is_broken(tmp_path, capsys):
    cfg = config(tmp_path, f'kind = "file"\npath = "{tmp_path / "missing.mp4"}"')
    code = main(["doctor", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 1
    fail_lines = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert any("missing.mp4" in line for line in fail_lines), out
    assert "fix:" in out


def test_a_crashing_provider_is_reported_not_fatal():
    from streamer import config as config_mod

    checks = run_checks(config_mod.load(None), ["streamer.doctor:environment_checks", "math:nonexistent"])
    assert any(c.status == "FAIL" and "check crashed" in c.detail for c in checks)
    assert any(c.name == "python" for c in checks)
    assert Check("x", "FAIL", "d", "do y").line().endswith("fix: do y")
