"""`streamer doctor`: one line per check, OK / WARN / FAIL, with the fix.

Each capability contributes its checks through a provider function listed in `PROVIDERS`
(`fn(settings) -> Iterable[Check]`), so this module knows nothing about Twitch or OBS internals.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from streamer import config as config_mod
from streamer.config import Settings

Status = Literal["OK", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status:<4}] {self.name}: {clip(self.detail, DETAIL_CHARS)}"
        return text + (f"\n         fix: {clip(self.fix, DETAIL_CHARS)}" if self.fix and self.status != "OK" else "")


DETAIL_CHARS = 600  # a check's detail or fix, at most: a configured 100,000-character path must still read as a line


def clip(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, saying how long it was (for paths and messages in one-line answers)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def os_error_text(e: OSError) -> str:
    """An OSError as one short line: 'File name too long: /tmp/aaa… (100,005 characters)'."""
    if e.strerror and isinstance(e.filename, str):
        return f"{e.strerror}: {clip(e.filename)}"
    return clip(str(e))


# "module:function" providers, run in this order.
PROVIDERS = [
    "streamer.doctor:environment_checks",
    "streamer.model.doctor:checks",
    "streamer.sources:doctor_checks",
    "streamer.sinks:doctor_checks",
    "streamer.control.policy.moderation:doctor_checks",
    "streamer.control.dashboard.server:doctor_checks",
    "streamer.control.obs.controller:doctor_checks",
    "streamer.control.twitch.component:doctor_checks",
]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_checks(settings: Settings) -> Iterable[Check]:
    py = platform.python_version()
    yield Check("python", "OK" if sys.version_info >= (3, 11) else "FAIL", py, "install Python 3.11 or newer")
    for dist, needed_for in [("av", "video I/O"), ("numpy", "frames"), ("aiohttp", "dashboard"), ("torch", "the model")]:
        v = _version(dist)
        yield Check(f"package {dist}", "OK" if v else "FAIL", v or f"missing ({needed_for})", f"pip install {dist}")
    for dist, needed_for, extra in [
        ("twitchio", "Twitch control", "twitch"),
        ("obsws-python", "OBS control", "obs"),
        ("triton", "the GPU fast path", "gpu"),
    ]:
        v = _version(dist)
        yield Check(f"package {dist}", "OK" if v else "WARN", v or f"missing ({needed_for})", f"pip install 'streamer[{extra}]'")
    yield from torch_device_checks(settings)


def torch_device_checks(settings: Settings) -> Iterable[Check]:
    try:
        import torch
    except ImportError:
        return
    wanted = settings.model.device
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        yield Check("torch device", "OK", f"CUDA {props.name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, torch {torch.__version__}")
    elif wanted.startswith("cuda"):
        yield Check("torch device", "FAIL", f"model.device = {wanted!r} but torch {torch.__version__} sees no CUDA GPU",
                    "install a CUDA build of torch and a driver, or set model.device = 'auto'")
    else:
        yield Check("torch device", "OK" if settings.model.preset == "tiny" else "WARN",
                    f"CPU only (torch {torch.__version__}); preset {settings.model.preset}",
                    "the wan presets need a CUDA GPU; use preset = 'tiny' on a CPU")


def run_checks(settings: Settings, providers: list[str] | None = None) -> list[Check]:
    checks: list[Check] = []
    for spec in providers or PROVIDERS:
        module, func = spec.split(":")
        try:
            provider: Callable[[Settings], Iterable[Check]] = getattr(importlib.import_module(module), func)
            checks.extend(provider(settings))
        except OSError as e:  # a configured path the provider did not expect to be unusable (too long, say)
            checks.append(Check(spec, "FAIL", f"cannot check: {os_error_text(e)}", "check the paths in the config"))
        except Exception as e:  # a broken check must not hide the others
            checks.append(Check(spec, "FAIL", f"check crashed: {type(e).__name__}: {e}", "report this as a bug"))
    return checks


def doctor_command(args: argparse.Namespace) -> int:
    settings = config_mod.load(args.config)
    print(f"streamer doctor — config: {settings.source_file or 'embedded defaults'}")
    checks = run_checks(settings)
    for check in checks:
        print(check.line())
    fails = sum(c.status == "FAIL" for c in checks)
    warns = sum(c.status == "WARN" for c in checks)
    print(f"{len(checks)} checks: {fails} FAIL, {warns} WARN")
    return 1 if fails else 0
