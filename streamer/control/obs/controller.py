"""OBS controller: a daemon component that keeps OBS and the daemon in step over obs-websocket v5.

- shows the current prompt in a text source (follows the PromptBus, debounced);
- per-scene activation: `pipeline.set_scene_active()` follows the program scene (`obs.active_scenes`);
- kill switch from OBS: showing `obs.kill_source` (bind its show/hide hotkeys) or switching to
  `obs.kill_scene` calls `bus.set_enabled(False)`; hiding it / leaving the scene re-enables. We use the
  PromptBus kill switch (not a separate governor) so every control (chat `!aioff`, dashboard, OBS)
  flips the same, recorded state;
- audio sync: the offset of `obs.audio_sync_inputs` follows the measured latency (audio_sync.py).
The blocking obsws-python client runs on one worker thread; a supervisor reconnects with
exponential backoff and resubscribes after OBS exits (`ExitStarted`) or drops. The video pipeline
never waits on OBS: while OBS is away the last scene state simply stays.

Also here: `streamer obs setup` (`setup_command`) and the doctor checks (`doctor_checks`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from streamer import config as config_mod
from streamer.config import Settings
from streamer.control.obs.audio_sync import AudioSync
from streamer.control.obs.conn import ObsAuthError, ObsError, ObsRequestError, ObsSession, connect
from streamer.control.policy.moderation import shown_prompt_limit
from streamer.control.policy.normalize import display_text
from streamer.prompts import PromptState

if TYPE_CHECKING:
    from streamer.app import AppContext
    from streamer.doctor import Check

log = logging.getLogger(__name__)
T = TypeVar("T")

# GENERAL (ExitStarted) | SCENES (CurrentProgramSceneChanged) | INPUTS (InputCreated) | SCENEITEMS
# (SceneItemEnableStateChanged): obs-websocket 5 EventSubscription bits
EVENT_SUBS = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 7)
SOURCE = "obs"  # PromptBus `source` of the changes this controller makes


def prompt_display(state: PromptState, limit: int) -> str:
    """What the text source shows: the prompt as pages show it (no control, bidi or zero-width
    characters; clipped to `limit` with "…"), or that the AI is off. Audience text reaches the bus
    only through moderation (and a moderator, in approval mode); this also covers the streamer's own."""
    return display_text(state.text, limit) if state.enabled else "AI off"


class ObsController:
    """The `obs` component. `run()` lives until cancelled; connection state is in `status()`."""

    name = "obs"

    def __init__(self, ctx: AppContext, session_factory: Callable[..., ObsSession] = ObsSession) -> None:
        self.settings: Settings = ctx.settings
        self.bus = ctx.bus
        self.pipeline = ctx.pipeline
        self.metrics = ctx.metrics  # obs_connections counts (re)connections: /metrics shows OBS coming back
        self._factory = session_factory
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streamer-obs")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=256)
        self._session: ObsSession | None = None
        self._prompt_due: float | None = None  # loop time at which to push the prompt text
        self._scene: str | None = None
        self._warned: set[str] = set()
        self.connections = 0  # successful connections so far (1 + reconnects)
        self.connected = False
        self.last_error = ""
        self.obs_version = ""
        # the microphone's delay follows the picture's latency (obs.audio_sync_inputs; empty = off)
        self.audio_sync = AudioSync(ctx.settings, ctx.metrics, ctx.store) if ctx.settings.obs.audio_sync_inputs else None

    def status(self) -> str:
        if self.connected:
            return f"connected to OBS {self.obs_version}, scene {self._scene!r}"
        return f"waiting for OBS ({self.last_error or 'not connected yet'})"

    # ------------------------------------------------------------------ supervisor

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.bus.add_listener(self._on_prompt)
        o = self.settings.obs
        delay = o.reconnect_initial_s
        try:
            while True:
                try:
                    self._session = await self._call(self._open)
                except ObsError as e:
                    self._report_down(str(e), auth=isinstance(e, ObsAuthError))
                else:
                    delay = o.reconnect_initial_s
                    try:
                        await self._serve(self._session)
                    except ObsError as e:
                        self._report_down(f"connection lost: {e}")
                    finally:
                        self.connected = False
                        session, self._session = self._session, None
                        await self._call(session.close)
                await asyncio.sleep(delay)
                delay = min(delay * 2, o.reconnect_max_s)
        finally:
            self.bus.remove_listener(self._on_prompt)
            self.connected = False
            if self._session is not None:
                self._executor.submit(self._session.close)
            self._executor.shutdown(wait=False)

    def _open(self) -> ObsSession:
        session = self._factory(self.settings.obs, on_event=self._on_obs_event, event_subs=EVENT_SUBS)
        try:
            v = session.request("GetVersion")
        except ObsError:
            session.close()
            raise
        self.obs_version = f"{v.get('obsVersion', '?')} (websocket {v.get('obsWebSocketVersion', '?')})"
        return session

    def _report_down(self, message: str, auth: bool = False) -> None:
        # say it once per distinct problem, then quietly retry: OBS being closed is normal
        self.last_error = message
        if message not in self._warned:
            self._warned.add(message)
            (log.error if auth else log.warning)("OBS: %s; retrying in the background", message)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def _request(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A request whose failure inside OBS (missing source...) is reported, not fatal. A dead socket raises ObsError."""
        assert self._session is not None
        try:
            return await self._call(self._session.request, name, data)
        except ObsRequestError as e:
            key = f"{name}:{e.code}:{(data or {}).get('inputName', '')}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning("OBS: %s (run `streamer obs setup` to create the daemon's sources)", e)
            return None

    # ------------------------------------------------------------------ connected

    async def _serve(self, session: ObsSession) -> None:
        """Sync state, then handle events and prompt updates until OBS exits or the socket drops."""
        self._drain_events()
        self.connections += 1
        if self.metrics is not None:
            self.metrics.count("obs_connections")
        self.connected = True
        self.last_error = ""
        self._warned.clear()
        log.info("OBS: connected to %s:%d, OBS %s", self.settings.obs.host, self.settings.obs.port, self.obs_version)
        current = await self._request("GetCurrentProgramScene")
        if current:
            await self._scene_changed(current.get("currentProgramSceneName", ""), initial=True)
        self._prompt_due = 0.0  # push the current prompt now: OBS may have restarted with stale text
        if self.audio_sync is not None:
            await self.audio_sync.connected(self._request)
        assert self._loop is not None
        while True:
            timeout = 0.5
            if self._prompt_due is not None:
                timeout = max(0.0, min(timeout, self._prompt_due - self._loop.time()))
            try:
                event_type, data = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                pass
            else:
                if event_type == "ExitStarted":
                    log.warning("OBS is exiting; will reconnect when it is back")
                    return
                await self._handle_event(event_type, data)
            if self._prompt_due is not None and self._loop.time() >= self._prompt_due:
                self._prompt_due = None
                await self._push_prompt()
            if self.audio_sync is not None:
                await self.audio_sync.tick(self._request, self._loop.time())
            if not session.events_alive():
                raise ObsError("OBS closed the connection")

    def _drain_events(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    async def _handle_event(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "CurrentProgramSceneChanged":
            await self._scene_changed(data.get("sceneName", ""))
        elif event_type == "InputCreated" and data.get("inputName") == self.settings.obs.prompt_input:
            self._prompt_changed()  # `obs setup` (re)created it with the config's prompt: show the live one
        elif event_type == "SceneItemEnableStateChanged" and self.settings.obs.kill_source:
            name = await self._item_source(data.get("sceneName", ""), data.get("sceneItemId"))
            if name == self.settings.obs.kill_source:
                self._set_killed(bool(data.get("sceneItemEnabled")), f"OBS source '{name}'")

    async def _scene_changed(self, scene: str, initial: bool = False) -> None:
        o = self.settings.obs
        previous, self._scene = self._scene, scene
        active = not o.active_scenes or scene in o.active_scenes
        self.pipeline.set_scene_active(active)
        if o.kill_scene:
            if scene == o.kill_scene:
                self._set_killed(True, f"OBS scene '{scene}'")
            elif previous == o.kill_scene and not initial:
                self._set_killed(False, f"left OBS scene '{previous}'", only_if_ours=True)
        if initial and o.kill_source and await self._source_visible(scene, o.kill_source):
            self._set_killed(True, f"OBS source '{o.kill_source}'")

    def _set_killed(self, killed: bool, why: str, only_if_ours: bool = False) -> None:
        state = self.bus.current()
        if state.enabled == (not killed):
            return
        if only_if_ours and state.source != SOURCE:
            return  # a moderator switched it off meanwhile: leaving a scene must not undo that
        self.bus.set_enabled(not killed, source=SOURCE, author="streamer", reason=why)

    async def _item_source(self, scene: str, item_id: Any) -> str | None:
        items = await self._request("GetSceneItemList", {"sceneName": scene})
        for item in (items or {}).get("sceneItems", []):
            if item.get("sceneItemId") == item_id:
                return str(item.get("sourceName"))
        return None

    async def _source_visible(self, scene: str, source: str) -> bool:
        items = await self._request("GetSceneItemList", {"sceneName": scene})
        return any(i.get("sourceName") == source and i.get("sceneItemEnabled") for i in (items or {}).get("sceneItems", []))

    async def _push_prompt(self) -> None:
        text = prompt_display(self.bus.current(), shown_prompt_limit(self.settings.moderation))
        await self._request("SetInputSettings", {
            "inputName": self.settings.obs.prompt_input, "inputSettings": {"text": text}, "overlay": True,
        })

    # ------------------------------------------------------------------ callbacks from other threads

    def _on_prompt(self, state: PromptState) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._prompt_changed)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _prompt_changed(self) -> None:
        if self._prompt_due is None and self._loop is not None:
            self._prompt_due = self._loop.time() + self.settings.obs.prompt_debounce_s

    def _on_obs_event(self, event_type: str, data: dict[str, Any]) -> None:
        # obsws-python's reader thread: an exception here would silently end that thread
        loop = self._loop
        try:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._enqueue, event_type, data or {})
        except Exception:
            log.debug("dropped OBS event %s", event_type, exc_info=True)

    def _enqueue(self, event_type: str, data: dict[str, Any]) -> None:
        try:
            self._events.put_nowait((event_type, data))
        except asyncio.QueueFull:
            log.warning("OBS events arrive faster than handled; dropped %s", event_type)


def build(ctx: AppContext) -> ObsController | None:
    """The daemon's `obs` component, or None when `obs.enabled` is false."""
    if not ctx.settings.obs.enabled:
        return None
    import obsws_python  # noqa: F401  # fail here (ImportError -> "disabled, install the extra") not later

    return ObsController(ctx)


# ---------------------------------------------------------------------- CLI and doctor


def setup_command(args: argparse.Namespace) -> int:
    """`streamer obs setup [--config FILE]`: create or repair the daemon's sources in OBS."""
    from streamer.control.obs.audio_sync import setup_offsets
    from streamer.control.obs.setup import SetupError, run_setup

    settings = config_mod.load(getattr(args, "config", None))
    try:
        session = connect(settings.obs)
    except ObsError as e:
        print(f"obs setup: {e}")
        return 1
    try:
        report = run_setup(session, settings, settings.prompt.initial)
        changes = report.changes + setup_offsets(session, settings)
    except (ObsError, SetupError) as e:
        print(f"obs setup: {e}")
        return 1
    finally:
        session.close()
    print(f"obs setup: {changes} change(s)" if changes else "obs setup: unchanged")
    return 0


def doctor_checks(settings: Settings) -> Iterable[Check]:
    """Connection (with OBS_WEBSOCKET_PASSWORD), versions, and whether setup's scene and inputs exist."""
    from streamer.doctor import Check

    o = settings.obs
    if not o.enabled:
        yield Check("obs", "OK", "disabled (obs.enabled = false)")
        return
    try:
        import obsws_python  # noqa: F401
    except ImportError:
        yield Check("obs", "FAIL", "obsws-python is not installed", "pip install 'streamer[obs]'")
        return
    started = time.monotonic()
    try:
        session = connect(o)
    except ObsAuthError as e:
        yield Check("obs connection", "FAIL", str(e), "copy the password from OBS into OBS_WEBSOCKET_PASSWORD")
        return
    except ObsError as e:
        yield Check("obs connection", "FAIL", str(e), "start OBS and enable Tools > WebSocket Server Settings")
        return
    try:
        v = session.request("GetVersion")
        ms = (time.monotonic() - started) * 1000
        yield Check("obs connection", "OK", f"ws://{o.host}:{o.port} in {ms:.0f} ms")
        yield Check("obs version", "OK", f"OBS {v.get('obsVersion')}, obs-websocket {v.get('obsWebSocketVersion')}, "
                    f"{v.get('platformDescription', v.get('platform', '?'))}")
        scenes = {s["sceneName"] for s in session.request("GetSceneList").get("scenes", [])}
        inputs = {i["inputName"]: i["inputKind"] for i in session.request("GetInputList").get("inputs", [])}
        fix = "run `streamer obs setup`"
        yield Check("obs scene", "OK" if o.scene in scenes else "FAIL",
                    f"'{o.scene}' {'exists' if o.scene in scenes else 'is missing'}", fix)
        for name in (o.ai_input, o.prompt_input):
            yield Check(f"obs input '{name}'", "OK" if name in inputs else "FAIL",
                        inputs.get(name, "missing"), fix)
        for name in o.audio_sync_inputs:
            ok = name in inputs
            offset = session.request("GetInputAudioSyncOffset", {"inputName": name})["inputAudioSyncOffset"] if ok else 0
            yield Check(f"obs audio sync '{name}'", "OK" if ok else "FAIL",
                        f"offset {offset} ms" if ok else "no such input in OBS",
                        "fix obs.audio_sync_inputs (names as OBS's Audio Mixer shows them)")
        for scene in (*o.active_scenes, *([o.kill_scene] if o.kill_scene else [])):
            if scene not in scenes:
                yield Check(f"obs scene '{scene}'", "WARN", "named in [obs] but not in OBS",
                            "create it in OBS or fix obs.active_scenes / obs.kill_scene")
        if o.kill_source and o.kill_source not in inputs and o.kill_source not in scenes:
            yield Check(f"obs kill source '{o.kill_source}'", "WARN", "not found in OBS", "create it or fix obs.kill_source")
    except ObsError as e:
        yield Check("obs", "FAIL", str(e), "check the OBS log (Help > Log Files)")
    finally:
        session.close()
