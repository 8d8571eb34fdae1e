"""`streamer obs setup`: create or repair the daemon's sources in OBS, idempotently.

What is wanted is computed from the settings and from what this OBS offers (its platform and
input kinds, asked over the websocket, since OBS may run on another machine):
- the AI video input: the network media source (`ffmpeg_source` reading the network sink's URL,
  buffering 0) or the virtual-camera device with buffering off (`v4l2_input` / `dshow_input` /
  the macOS AVFoundation capture);
- a text source with the current prompt (plain text: no HTML, so no injection);
- a browser source with the overlay, where this OBS has one.
Each is compared with what exists: missing -> created, different settings -> changed (only the keys
we own), wrong kind -> replaced, not in the scene -> added. A second run reports "unchanged".
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamer.config import Settings
from streamer.control.obs.conn import RESOURCE_NOT_FOUND, ObsRequestError, ObsSession

# per OS, the input kinds to try in order (newest first; OBS renames kinds when their settings change)
TEXT_KINDS = {
    "windows": ("text_gdiplus_v3", "text_gdiplus_v2", "text_gdiplus"),
    "linux": ("text_ft2_source_v2", "text_ft2_source"),
    "macos": ("text_ft2_source_v2", "text_ft2_source"),
}
FONT_FACE = {"windows": "Arial", "linux": "DejaVu Sans", "macos": "Helvetica"}
CAMERA_KINDS = {
    "windows": ("dshow_input",),
    "linux": ("v4l2_input",),
    "macos": ("macos-avcapture", "av_capture_input_v2", "av_capture_input"),
}
BROWSER_KIND = "browser_source"
DSHOW_BUFFERING_OFF = 2  # win-dshow BufferingType { Auto, On, Off }


def obs_platform(version: dict[str, Any]) -> str:
    """GetVersion's `platform` is "windows", "macos", or a Linux distribution id ("debian", "ubuntu", ...)."""
    p = str(version.get("platform", "")).lower()
    return p if p in ("windows", "macos") else "linux"


@dataclass(frozen=True)
class WantedInput:
    name: str
    kind: str
    settings: dict[str, Any]  # the keys we own; compared with OBS's values
    create_only: dict[str, Any] = field(default_factory=dict)  # set at creation only (e.g. live prompt text)


@dataclass
class SetupReport:
    lines: list[str] = field(default_factory=list)
    changes: int = 0

    def changed(self, line: str) -> None:
        self.lines.append(line)
        self.changes += 1

    def note(self, line: str) -> None:
        self.lines.append(line)


def receive_url(send_url: str) -> str:
    """The URL OBS listens on for what the network sink sends: same scheme/host/port, without
    sender-only options (pkt_size etc.)."""
    parts = urllib.parse.urlsplit(send_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def return_path(settings: Settings) -> str:
    o = settings.obs
    if o.return_path != "auto":
        return o.return_path
    enabled = settings.sinks.enabled
    if "network" in enabled:
        return "network"
    return "virtualcam" if "virtualcam" in enabled else "network"


def overlay_url(settings: Settings) -> str:
    if settings.obs.overlay_url:
        return settings.obs.overlay_url
    host = settings.dashboard.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{settings.dashboard.port}/overlays/overlay.html"  # streamer.control.dashboard.server serves it


def _first_kind(candidates: tuple[str, ...], kinds: set[str], what: str) -> str:
    for kind in candidates:
        if kind in kinds:
            return kind
    raise SetupError(f"this OBS has no {what} input (looked for {', '.join(candidates)})")


class SetupError(RuntimeError):
    """Setup cannot proceed (e.g. OBS lacks a required input kind); the message says why."""


def ai_video_input(settings: Settings, platform: str, kinds: set[str]) -> WantedInput:
    name = settings.obs.ai_input
    if return_path(settings) == "network":
        url = settings.obs.return_url or receive_url(settings.sinks.network.url)
        _first_kind(("ffmpeg_source",), kinds, "media source (ffmpeg_source)")
        return WantedInput(name, "ffmpeg_source", {
            "is_local_file": False,
            "input": url,
            "input_format": "mpegts",
            "buffering_mb": 0,  # OBS otherwise holds ~2 MB of stream before showing it
            "reconnect_delay_sec": 1,  # the daemon restarting must not leave the source black for 10 s
            "restart_on_activate": False,
            "close_when_inactive": False,
            "clear_on_media_end": False,  # keep the last frame rather than flash black on a hiccup
            "hw_decode": False,
        })
    device = settings.obs.return_device or settings.sinks.virtualcam.device
    kind = _first_kind(CAMERA_KINDS[platform], kinds, "video capture device")
    if not device:
        raise SetupError(
            "obs.return_path is virtualcam but no device is configured: set obs.return_device "
            "(or sinks.virtualcam.device), e.g. /dev/video11 or 'Unity Video Capture'"
        )
    if platform == "linux":
        return WantedInput(name, kind, {"device_id": device, "buffering": False})
    if platform == "windows":
        # dshow ids are "<friendly name>:<device path>"; a bare name is accepted by OBS and resolved
        return WantedInput(name, kind, {"video_device_id": device, "buffering": DSHOW_BUFFERING_OFF})
    return WantedInput(name, kind, {"device": device, "buffering": False})


def prompt_text_input(settings: Settings, platform: str, kinds: set[str], text: str) -> WantedInput:
    kind = _first_kind(TEXT_KINDS[platform], kinds, "text")
    font = {"face": FONT_FACE[platform], "size": 36, "style": "", "flags": 0}
    if kind.startswith("text_gdiplus"):
        wanted: dict[str, Any] = {"font": font, "color": 0xFFFFFF, "outline": True, "outline_size": 2}
    else:
        wanted = {"font": font, "color1": 0xFFFFFFFF, "color2": 0xFFFFFFFF, "outline": True, "word_wrap": False}
    return WantedInput(settings.obs.prompt_input, kind, wanted, create_only={"text": text})


def overlay_input(settings: Settings) -> WantedInput:
    v = settings.video
    return WantedInput(settings.obs.overlay_input, BROWSER_KIND, {
        "url": overlay_url(settings),
        "is_local_file": False,
        "width": v.width,
        "height": v.height,
        "reroute_audio": False,
    })


def _differs(wanted: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys of `wanted` whose value OBS does not have (nested dicts compared key by key)."""
    out = []
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, dict):
            if not isinstance(have, dict) or _differs(value, have):
                out.append(key)
        elif have != value:
            out.append(key)
    return out


def retire_input(obs: ObsSession, name: str, temporary: str) -> None:
    """Free `name` now and remove that input. RemoveInput alone is not enough: OBS drops a removed
    source's scene items only when that scene renders, so in a scene that is not live the name stays
    taken; a rename takes effect at once."""
    obs.request("SetInputName", {"inputName": name, "newInputName": temporary})
    obs.request("RemoveInput", {"inputName": temporary})


def ensure_scene(obs: ObsSession, scene: str, report: SetupReport) -> None:
    scenes = {s["sceneName"] for s in obs.request("GetSceneList").get("scenes", [])}
    if scene in scenes:
        report.note(f"scene '{scene}': unchanged")
    else:
        obs.request("CreateScene", {"sceneName": scene})
        report.changed(f"scene '{scene}': created")


def ensure_input(obs: ObsSession, scene: str, want: WantedInput, existing: dict[str, str], report: SetupReport) -> None:
    label = f"input '{want.name}' ({want.kind})"
    kind = existing.get(want.name)
    if kind is not None and kind != want.kind:
        retire_input(obs, want.name, f"{want.name} (old {kind})")
        report.changed(f"{label}: removed the old {kind} input of that name")
        kind = None
    if kind is None:
        obs.request("CreateInput", {
            "sceneName": scene,
            "inputName": want.name,
            "inputKind": want.kind,
            "inputSettings": {**want.create_only, **want.settings},
            "sceneItemEnabled": True,
        })
        report.changed(f"{label}: created in scene '{scene}'")
        return
    current = obs.request("GetInputSettings", {"inputName": want.name}).get("inputSettings", {})
    stale = _differs(want.settings, current)
    if stale:
        obs.request("SetInputSettings", {"inputName": want.name, "inputSettings": want.settings, "overlay": True})
        report.changed(f"{label}: changed {', '.join(stale)}")
    try:
        obs.request("GetSceneItemId", {"sceneName": scene, "sourceName": want.name})
    except ObsRequestError as e:
        if e.code != RESOURCE_NOT_FOUND:
            raise
        obs.request("CreateSceneItem", {"sceneName": scene, "sourceName": want.name, "sceneItemEnabled": True})
        report.changed(f"{label}: added to scene '{scene}'")
        stale = stale or ["scene"]
    if not stale:
        report.note(f"{label}: unchanged")


def run_setup(obs: ObsSession, settings: Settings, prompt_text: str, say: Callable[[str], None] = print) -> SetupReport:
    """Create or repair everything; `say` gets one line per item at the end (also in the report)."""
    report = SetupReport()
    version = obs.request("GetVersion")
    platform = obs_platform(version)
    kinds = set(obs.request("GetInputKindList", {"unversioned": False}).get("inputKinds", []))
    scene = settings.obs.scene
    ensure_scene(obs, scene, report)
    existing = {i["inputName"]: i["inputKind"] for i in obs.request("GetInputList").get("inputs", [])}
    wanted = [ai_video_input(settings, platform, kinds), prompt_text_input(settings, platform, kinds, prompt_text)]
    if BROWSER_KIND in kinds:
        wanted.append(overlay_input(settings))
    for want in wanted:
        ensure_input(obs, scene, want, existing, report)
    if BROWSER_KIND not in kinds:
        report.note(f"overlay '{settings.obs.overlay_input}': skipped: this OBS has no browser source "
                    f"(add the overlay by hand, e.g. a window capture of {overlay_url(settings)})")
    for line in report.lines:
        say(line)
    return report
