"""Settings: one TOML file -> frozen, validated dataclasses.

Every section is a frozen dataclass below; the loader walks the type hints, so a new key is one
field plus one line in config.example.toml. Errors name the file, the dotted key and what was
expected; unknown keys are errors (a typo must never be silently ignored). Secrets are never read
from the file: they come from the environment variables named in `secret()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from streamer.config_bounds import BOUNDS, out_of_bounds


class ConfigError(ValueError):
    """A problem in a config file, phrased for the streamer: file, key, expected, got. Always one printable
    line (a key or value holding a newline, a bidi control or an escape sequence is shown escaped), so
    the CLI's answer is one line on the terminal, never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(_printable(message))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in _clip(text, 2000))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr, clipped. A 5000-digit int has no repr (Python's int-to-str
    limit) and a 3000-deep list overflows repr's recursion: both are described instead."""
    try:
        text = repr(value)
    except ValueError:  # int too long to convert to text
        text = f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply to show"
    return _clip(text, limit)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class VideoSettings:
    width: int = 640  # the pipeline's frame size: sources are scaled to it, sinks get it
    height: int = 360
    fps: float = 30.0  # output pacing; the output thread repeats the last frame when the engine is late


@dataclass(frozen=True)
class SourceSettings:
    kind: Literal["pattern", "file", "network", "camera"] = "pattern"
    pattern: str = "testsrc2"  # lavfi source name for kind=pattern
    path: str = ""  # media file for kind=file (looped, paced in real time)
    url: str = ""  # udp://, tcp://, rtmp:// for kind=network
    format: str = ""  # container for kind=network ("mpegts", "flv"); empty = probe
    device: str = ""  # camera: "video=OBS Virtual Camera" (dshow), "0" (avfoundation), "/dev/video10" (v4l2)
    camera_backend: Literal["auto", "dshow", "avfoundation", "v4l2"] = "auto"
    reconnect_initial_s: float = 0.5  # first retry delay after the input drops
    reconnect_max_s: float = 10.0  # backoff ceiling
    timeout_s: float = 3.0  # network/camera: an input silent this long (or not opening) counts as dropped
    stamp: bool = True  # pattern: burn the frame index into the top-left corner as a block code


@dataclass(frozen=True)
class VirtualCamSinkSettings:
    backend: str = ""  # pyvirtualcam backend ("v4l2loopback", "unitycapture", "obs"); empty = auto
    device: str = ""  # e.g. /dev/video11 (Linux) or "Unity Video Capture" (Windows)


@dataclass(frozen=True)
class NetworkSinkSettings:
    url: str = "udp://127.0.0.1:5600?pkt_size=1316"
    bitrate_kbps: int = 4000
    preset: str = "ultrafast"
    keyframe_interval_s: float = 0.5  # small GOP: a receiver that joins (or loses a packet) recovers this fast
    end_frames_early: bool = True  # end each H.264 frame with an access-unit delimiter: receivers decode it a frame sooner


@dataclass(frozen=True)
class RecordSinkSettings:
    path: str = "recordings/streamer-{time}.mp4"  # {time} becomes a timestamp
    codec: str = "libx264"
    crf: int = 23
    preset: str = "veryfast"  # x264 preset: encoding must keep up in the output thread


@dataclass(frozen=True)
class SinksSettings:
    enabled: tuple[str, ...] = ("virtualcam", "record")  # any of: virtualcam, network, record, null
    virtualcam: VirtualCamSinkSettings = field(default_factory=VirtualCamSinkSettings)
    network: NetworkSinkSettings = field(default_factory=NetworkSinkSettings)
    record: RecordSinkSettings = field(default_factory=RecordSinkSettings)


@dataclass(frozen=True)
class EngineSettings:
    transform: Literal["passthrough", "model"] = "model"
    retry_model_after_s: float = 10.0  # after a model failure, passthrough this long, then try again


# model.checkpoint_key: which entry of a training pickle (generator, generator_ema, ...) is the DiT;
# auto = what the file's upstream inference script loads by default (streamer/model/weights/containers.py).
CheckpointKey = Literal["auto", "generator", "generator_ema"]


@dataclass(frozen=True)
class PresetDefaults:
    """What model.steps = 0, model.strength = 0, model.window = 0 and model.sinks = -1 mean for a preset.

    steps: the embedded tiny model is trained and measured at one step (v3: held-out PSNR 21.2 dB at 1
    step and strength 0.45 against 18.2 at 2 steps; docs/training.md), and one step halves its CPU cost;
    the Wan models use the two steps of the published streaming setups.
    strength: the Wan models redraw most of the picture well at 0.8 (StreamDiffusionV2's setting); the tiny
    model v4 sees the clean input beside the noised one, so its strength matters little (24.84 dB / edge
    corr 0.66 at 0.45, 24.87 / 0.67 at 0.35, 23.66 / 0.58 at 0.8 after its first call; docs/training.md).
    window, sinks (latent frames): a short window for tiny (attention cost on the CPU grows with it), 6 with
    3 sinks for the Wan presets.
    """

    steps: int
    strength: float
    window: int
    sinks: int


PRESET_DEFAULTS: dict[str, PresetDefaults] = {
    "tiny": PresetDefaults(steps=1, strength=0.45, window=3, sinks=1),
    "wan-1.3b": PresetDefaults(steps=2, strength=0.8, window=6, sinks=3),
    "wan-14b": PresetDefaults(steps=2, strength=0.8, window=6, sinks=3),
}


@dataclass(frozen=True)
class ModelSettings:
    preset: Literal["tiny", "wan-1.3b", "wan-14b"] = "tiny"
    checkpoint: str = ""  # DiT weights (any layout); "" = the shipped tiny weights if present, else random; "random" = seeded random
    checkpoint_key: CheckpointKey = "auto"  # which entry of a training pickle is the DiT (docs/configuration.md)
    lora: str = ""  # optional LoRA file merged into the checkpoint (LongLive)
    vae: str = ""  # TAEHV weights (taew2_1.pth / .safetensors); "" = the shipped tiny autoencoder if present, else random; "random"
    text_encoder: str = ""  # umT5 for the wan presets: Wan2.1 folder or its .pth, Diffusers repo, HF folder; "" = small offline encoder
    # where the umT5 encoder runs: auto = on the GPU when it fits beside the DiT (the doctor's estimate), else
    # its weights wait in RAM and visit the GPU only to encode a new prompt; cpu; cuda (always on the GPU)
    text_encoder_device: Literal["auto", "cpu", "cuda"] = "auto"
    width: int = 256  # model resolution (multiple of 16)
    height: int = 256
    steps: int = 0  # denoising passes per chunk; 0 = the preset's (see PRESET_DEFAULTS)
    timesteps: tuple[float, ...] = ()  # explicit denoising timesteps (0-1000); empty = derived from strength
    strength: float = 0.0  # SDEdit noise strength in (0, 1]; 0 = the preset's (see PRESET_DEFAULTS)
    motion_aware: bool = True  # lower the strength on fast motion
    shift: float = 5.0  # flow-matching schedule shift
    window: int = 0  # KV cache window in latent frames, sinks included; 0 = the preset's (see PRESET_DEFAULTS)
    sinks: int = -1  # attention-sink frames kept at the start of the window; -1 = the preset's
    adaptive_sinks: bool = True  # replace a sink when new content is dissimilar
    sink_threshold: float = 0.2  # cosine similarity below which a new frame replaces a sink
    rope_refresh_after: int = 50  # latent frames before RoPE positions rewind (0 = never)
    mode: Literal["sequential", "stream-batch"] = "sequential"
    transition_chunks: int = 8  # chunks over which a new prompt blends in
    # auto: bf16 where the device runs it natively; fp8: the DiT's matmuls in FP8 (e4m3) on cards with FP8
    # tensor cores (compute capability 8.9+: RTX 40xx, L4, L40, H100), bf16 around them; auto never picks it
    dtype: Literal["auto", "float32", "bfloat16", "float16", "fp8"] = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    fast_path: bool = True  # on CUDA: fused Triton kernels + one CUDA graph per chunk; false = eager PyTorch
    # pipeline stages, one process per GPU (the DiT's layers split over them; docs/multi-gpu.md); "all" = every
    # visible GPU; 1 = this process only. On the CPU, N gloo processes (tests and development)
    gpus: int | Literal["all"] = 1
    seed: int = 0
    cache_dir: str = ""  # prompt-embedding cache; empty = platform cache dir

    def __post_init__(self) -> None:
        # Resolved here, once, so every reader of model.steps (engines, fast path, doctor, bench) sees a count.
        if self.steps == 0 and self.preset in PRESET_DEFAULTS:
            object.__setattr__(self, "steps", PRESET_DEFAULTS[self.preset].steps)


def effective_strength(m: ModelSettings) -> float:
    """The strength the engine starts from: model.strength, or the preset's when it is 0."""
    return m.strength or PRESET_DEFAULTS[m.preset].strength


def effective_window(m: ModelSettings) -> tuple[int, int]:
    """(window, sinks) the engine uses: explicit values as set, 0 / -1 = the preset's default; a default
    sink count is capped at window - 2 so an explicit small window keeps one history frame."""
    preset = PRESET_DEFAULTS[m.preset]
    window = m.window or preset.window
    sinks = m.sinks if m.sinks >= 0 else min(preset.sinks, max(window - 2, 0))
    return window, sinks


@dataclass(frozen=True)
class PromptSettings:
    initial: str = "a watercolour painting"
    console: bool = True  # read prompts typed into the daemon's terminal


@dataclass(frozen=True)
class MetricsSettings:
    status_interval_s: float = 1.0  # how often the status line is printed
    window: int = 600  # samples kept for p50/p99


@dataclass(frozen=True)
class StoreSettings:
    path: str = "~/.local/share/streamer/streamer.db"


@dataclass(frozen=True)
class ModerationSettings:
    mode: Literal["open", "approval", "presets-only"] = "open"
    max_length: int = 200  # characters of prompt text a person may propose
    blocklist_extra: tuple[str, ...] = ()  # words and phrases added to the shipped blocklist
    template: str = "{prompt}"  # server-side prompt template; chat text fills {prompt} only
    min_change_interval_s: float = 10.0  # at most one audience prompt change per this many seconds
    blocklist_allow: tuple[str, ...] = ()  # shipped blocklist entries to drop (exactly as listed in blocklist.py)
    presets: dict[str, str] = field(default_factory=dict)  # curated looks: name -> prompt (`!style name`, presets-only mode)
    negative_prompt: str = "nudity, nsfw, gore, blood, text, watermark"  # fixed negative terms (models that use one); chat cannot change it
    trusted_sources: tuple[str, ...] = ("dashboard", "console", "poll")  # still moderated, but skip approval, presets-only and the rate limit
    approval_max_age_s: float = 600.0  # pending approvals older than this expire (refunded); 0 = never
    audit_max_chars: int = 300  # characters of raw text kept per audit-log entry


Role = Literal["everyone", "subscriber", "vip", "moderator", "broadcaster"]


@dataclass(frozen=True)
class TwitchCommandNames:
    """The chat word (after the prefix) for each command; "" switches that command off."""

    ai: str = "ai"  # !ai <prompt>: propose a prompt
    style: str = "style"  # !style <preset>
    vote: str = "vote"  # !vote <n>: chat vote while a chat poll runs
    aiqueue: str = "aiqueue"  # !aiqueue: what waits for approval
    approve: str = "approve"  # !approve <id>
    deny: str = "deny"  # !deny <id>
    poll: str = "poll"  # !poll a | b [| ...] [seconds]
    aioff: str = "aioff"  # kill switch: passthrough
    aion: str = "aion"  # model back on
    strength: str = "strength"  # !strength <0..1>


@dataclass(frozen=True)
class TwitchCommandRoles:
    """The least role that may use each command (everyone < subscriber < vip < moderator < broadcaster)."""

    ai: Role = "everyone"
    style: Role = "everyone"
    vote: Role = "everyone"
    aiqueue: Role = "everyone"
    approve: Role = "moderator"
    deny: Role = "moderator"
    poll: Role = "moderator"
    aioff: Role = "moderator"
    aion: Role = "moderator"
    strength: Role = "moderator"


@dataclass(frozen=True)
class TwitchCooldowns:
    """Seconds between two uses of each command (moderators and the broadcaster are exempt); used
    twice: per chatter and channel-wide, with different defaults."""

    ai: float = 0.0
    style: float = 0.0
    vote: float = 0.0
    aiqueue: float = 0.0
    approve: float = 0.0
    deny: float = 0.0
    poll: float = 0.0
    aioff: float = 0.0
    aion: float = 0.0
    strength: float = 0.0


@dataclass(frozen=True)
class TwitchSettings:
    enabled: bool = False
    client_id: str = ""  # the app's client id (public); the secret comes from TWITCH_CLIENT_SECRET
    bot_id: str = ""  # user id of the bot account
    owner_id: str = ""  # user id of the broadcaster
    prefix: str = "!"
    bot_is_moderator: bool = False  # a mod bot may send 100 messages / 30 s instead of 20
    replies: bool = True  # answer commands in chat (replies are queued within Twitch's rate limits)
    reply_on_refusal: bool = True  # say briefly why a command was refused (role/cooldown); throttled per chatter
    outbox_max: int = 50  # replies waiting to be sent; the oldest are dropped beyond this
    reconnect_initial_s: float = 2.0  # first retry after Twitch is unreachable
    reconnect_max_s: float = 60.0  # backoff ceiling
    polls: Literal["auto", "native", "chat"] = "auto"  # auto: native Twitch polls, chat votes when not affiliate
    poll_seconds: int = 60  # default poll length (within Twitch's limits, control/policy/poll_spec.py)
    reward_enabled: bool = True  # create and serve the channel-points reward
    reward_title: str = "AI prompt"
    reward_cost: int = 500
    reward_prompt: str = "Describe a look for the stream (moderated; refunded if rejected)"
    reward_route: Literal["approval", "governor"] = "approval"  # approval: mods decide; governor: moderation rules only
    reward_cooldown_s: int = 60  # Twitch-side global cooldown of the reward (0 = none)
    commands: TwitchCommandNames = field(default_factory=TwitchCommandNames)
    roles: TwitchCommandRoles = field(default_factory=TwitchCommandRoles)
    # one chatter's wait between two uses of a command / anyone's wait in the channel
    user_cooldowns_s: TwitchCooldowns = field(
        default_factory=lambda: TwitchCooldowns(ai=30.0, style=30.0, aiqueue=30.0)
    )
    global_cooldowns_s: TwitchCooldowns = field(
        default_factory=lambda: TwitchCooldowns(ai=2.0, style=5.0, aiqueue=10.0)
    )


@dataclass(frozen=True)
class ObsSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 4455  # obs-websocket v5; the password comes from OBS_WEBSOCKET_PASSWORD
    connect_timeout_s: float = 3.0  # per connection attempt and per request
    reconnect_initial_s: float = 1.0  # first retry delay after OBS goes away
    reconnect_max_s: float = 30.0  # backoff ceiling
    scene: str = "Streamer AI"  # the scene `streamer obs setup` creates and fills
    return_path: Literal["auto", "network", "virtualcam"] = "auto"  # auto: network if that sink is enabled, else virtualcam
    return_url: str = ""  # what OBS's media source reads; empty = sinks.network.url
    return_device: str = ""  # virtual-camera device OBS reads; empty = sinks.virtualcam.device
    ai_input: str = "Streamer AI video"  # OBS input showing the daemon's output
    prompt_input: str = "Streamer prompt"  # OBS text source showing the current prompt
    overlay_input: str = "Streamer overlay"  # OBS browser source for the dashboard's overlay
    overlay_url: str = ""  # empty = http://<dashboard.host>:<dashboard.port>/overlays/overlay.html
    prompt_debounce_s: float = 0.1  # coalesce prompt changes before updating the text source
    active_scenes: tuple[str, ...] = ()  # the model runs only while one of these is the program scene; empty = always
    kill_source: str = ""  # a source whose visibility turns the AI off (bind show/hide hotkeys to it)
    kill_scene: str = ""  # switching to this scene turns the AI off; leaving it turns it back on
    audio_sync_inputs: tuple[str, ...] = ()  # OBS audio inputs (e.g. "Mic/Aux") delayed by the measured latency; empty = off
    audio_sync_extra_ms: int = 0  # added to the measured latency: the tap and OBS's return input, which the daemon cannot see


@dataclass(frozen=True)
class DashboardSettings:
    enabled: bool = True
    host: str = "127.0.0.1"  # loopback only by default; the token comes from STREAMER_DASHBOARD_TOKEN
    port: int = 8765
    allowed_hosts: tuple[str, ...] = ()  # extra Host names accepted (e.g. a LAN name); guards DNS rebinding
    preview_fps: float = 10.0  # live preview frames per second (encoded once, shared by all viewers)
    preview_quality: int = 5  # JPEG qscale, 2 (best) to 31 (smallest)
    preview_max_width: int = 640  # preview is scaled down to this width; 0 = full size
    metrics_interval_s: float = 1.0  # how often fps/latency are pushed to the dashboard charts
    overlay_queue: Literal["names", "count", "off"] = "names"  # pending approvals on overlays: who asked, how many, or nothing (never their text)


@dataclass(frozen=True)
class Settings:
    video: VideoSettings = field(default_factory=VideoSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    sinks: SinksSettings = field(default_factory=SinksSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    twitch: TwitchSettings = field(default_factory=TwitchSettings)
    obs: ObsSettings = field(default_factory=ObsSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    source_file: str = ""  # where these settings came from ("" = embedded defaults); not a TOML key


# --------------------------------------------------------------------------- loading


def load(path: str | Path | None = None) -> Settings:
    """Settings from a TOML file, or the embedded defaults when path is None."""
    if path is None:
        return Settings()
    p = Path(path).expanduser()
    return from_dict(read_toml(p, f"config file not found (create one with `streamer init {_short(str(p))}`)"), str(p))


MAX_CONFIG_BYTES = 1 << 20  # the example is ~20 KB; a larger "config" is some other file given by mistake


def read_toml(path: Path, not_found: str) -> dict[str, Any]:
    """The top-level table of a TOML file; ConfigError names the file when it is missing (`not_found`
    says what to do), not a regular file, unreadable, too large, not UTF-8 or not TOML (nested too deeply,
    an integer too long to convert). The one reader of config files (streamer/train/config.py too)."""
    name = _short(str(path))
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO (reading it would block), a device
            raise ConfigError(f"{name}: not a regular file, so not a config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{name}: {info.st_size} bytes, larger than any config file ({MAX_CONFIG_BYTES} at most)")
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{name}: {not_found}") from None
    except (OSError, ValueError) as e:  # permissions, a name too long, a NUL in the path
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{name}: cannot read it: {why}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nesting level of arrays and inline tables
        raise ConfigError(f"{name}: not valid TOML: values nested too deeply") from None
    except ValueError as e:  # e.g. an integer of over 4300 digits (Python's int-to-str conversion limit)
        raise ConfigError(f"{name}: not valid TOML: {_clip(str(e), 120)}") from None


def _short(name: str, limit: int = 160) -> str:
    """A file name for a message: a 100,000-character path is named by its start and its end."""
    return name if len(name) <= limit else f"{name[: limit // 2]}...{name[-(limit // 2) :]}"


def from_dict(raw: dict[str, Any], source_file: str = "<dict>") -> Settings:
    """Settings from a parsed TOML table; ConfigError names `source_file` and the key on any problem."""
    name = _short(source_file)
    settings = _build(Settings, raw, name, "", skip={"source_file"})
    settings = dataclasses.replace(settings, source_file=source_file)
    for key, must, value in out_of_bounds(settings):  # NaN, inf, negative, absurd: before any arithmetic on them
        raise ConfigError(f"{name}: '{key}' {must}; got {_show(value)}")
    _check(settings, name)
    return settings


def check_keys(table: Any, known: list[str], file: str, prefix: str) -> None:
    """`table` is a TOML table whose every key is in `known`: else a ConfigError naming the file, the
    dotted key and the closest known key, so a typo is never silently ignored."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{_short(where, 80)}] must be a table, got {type(table).__name__}")
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key[:100], known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            shown = _short(f"{prefix}{key}", 80)
            raise ConfigError(f"{file}: unknown key '{shown}'{hint}; known keys in [{where}]: {', '.join(known)}")


def _build(cls: type, raw: Any, file: str, prefix: str, skip: frozenset[str] | set[str] = frozenset()) -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    check_keys(raw, fields, file, prefix)
    values = {name: _convert(hints[name], raw[name], file, prefix + name) for name in fields if name in raw}
    return cls(**values)


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, file, key + ".")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{file}: '{key}' must be one of {', '.join(map(repr, choices))}; got {_show(value)}")
        return value
    if origin is dict:
        key_tp, value_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{key}' must be a table; got {type(value).__name__} {_show(value)}")
        return {_convert(key_tp, k, file, f"{key}.{k}"): _convert(value_tp, v, file, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        (item_tp, *_rest) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' must be a list; got {type(value).__name__} {_show(value)}")
        return tuple(_convert(item_tp, v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _convert(option, value, file, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{file}: '{key}' must be {_expected(tp)}; got {type(value).__name__} {_show(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: '{key}' must be true or false; got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: '{key}' must be an integer; got {type(value).__name__} {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{file}: '{key}' must be a number; got {type(value).__name__} {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: '{key}' must be a string; got {type(value).__name__} {_show(value)}")
        if "\0" in value:  # no path, URL, name or prompt holds one; in a path it crashes the first open()
            raise ConfigError(f"{file}: '{key}' must not contain a NUL character (\\0); got {_show(value)}")
        return value
    raise ConfigError(f"{file}: '{key}': unsupported setting type {tp!r}")  # a bug in this module


def _expected(tp: Any) -> str:
    """What a union setting accepts, in words: `int | Literal["all"]` -> "an integer or 'all'"."""
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}
    return " or ".join(
        " or ".join(map(repr, get_args(o))) if get_origin(o) is Literal else words.get(o, getattr(o, "__name__", str(o)))
        for o in get_args(tp)
    )


def _require(ok: bool, file: str, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{file}: '{key}' {message}")


_SINK_KINDS = ("virtualcam", "network", "record", "null")


def _check_moderation(m: ModerationSettings, f: str) -> None:
    _require(m.template.count("{prompt}") == 1, f, "moderation.template", "must contain {prompt} exactly once")
    for i, term in enumerate(m.blocklist_extra):
        _require(bool(term.strip(" *")), f, f"moderation.blocklist_extra[{i}]", "must not be empty")
    for name, prompt in m.presets.items():
        _require(bool(name.strip()) and bool(prompt.strip()), f, f"moderation.presets.{name}", "needs a name and a prompt")


def _check(s: Settings, f: str) -> None:
    """What the types and the ranges (streamer/config_bounds.py, checked first) cannot express: parity,
    multiples, and one setting against another."""
    _require(s.video.width % 2 == 0, f, "video.width", BOUNDS["video.width"].message)
    _require(s.video.height % 2 == 0, f, "video.height", BOUNDS["video.height"].message)
    for i, kind in enumerate(s.sinks.enabled):
        _require(kind in _SINK_KINDS, f, f"sinks.enabled[{i}]", f"must be one of {', '.join(_SINK_KINDS)}; got {kind!r}")
    _require(len(set(s.sinks.enabled)) == len(s.sinks.enabled), f, "sinks.enabled", "lists a sink twice")
    if s.source.kind == "file":
        _require(bool(s.source.path), f, "source.path", "must name a media file when source.kind = 'file'")
    if s.source.kind == "network":
        _require("://" in s.source.url, f, "source.url", "must be a URL like udp://127.0.0.1:5600 when source.kind = 'network'")
    _require(s.source.reconnect_max_s >= s.source.reconnect_initial_s, f, "source.reconnect_max_s", "must be >= source.reconnect_initial_s")
    m = s.model
    _require(m.width % 16 == 0, f, "model.width", BOUNDS["model.width"].message)
    _require(m.height % 16 == 0, f, "model.height", BOUNDS["model.height"].message)
    _require(not m.timesteps or len(m.timesteps) == m.steps, f, "model.timesteps", "must list exactly model.steps values")
    _require(m.dtype != "fp8" or m.device not in ("cpu", "mps"), f, "model.dtype",
             f"'fp8' needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9+), not model.device = {m.device!r}")
    window, _ = effective_window(m)
    # The rolling cache holds sinks + history + the current chunk: at least one history frame must remain.
    _require(m.sinks == -1 or 0 <= m.sinks <= window - 2, f, "model.sinks",
             f"must be -1 (the preset's default) or between 0 and model.window - 2 (= {window - 2} here)")
    _require(m.rope_refresh_after == 0 or m.rope_refresh_after > window, f, "model.rope_refresh_after",
             f"must be 0 (never) or larger than the KV window ({window} latent frames here)")
    _check_moderation(s.moderation, f)
    o = s.obs
    _require(o.reconnect_max_s >= o.reconnect_initial_s, f, "obs.reconnect_max_s", "must be >= obs.reconnect_initial_s")
    for key in ("scene", "ai_input", "prompt_input", "overlay_input"):
        _require(bool(getattr(o, key).strip()), f, f"obs.{key}", "must not be empty")
    _require(not o.return_url or "://" in o.return_url, f, "obs.return_url", "must be a URL like udp://127.0.0.1:5600")
    _check_twitch(s.twitch, f)


def _check_twitch(t: TwitchSettings, f: str) -> None:
    _require(bool(t.prefix.strip()) and " " not in t.prefix, f, "twitch.prefix", "must be a non-empty word without spaces")
    if t.enabled:
        for key in ("client_id", "bot_id", "owner_id"):
            _require(bool(getattr(t, key)), f, f"twitch.{key}", "must be set when twitch.enabled = true (see docs/twitch.md)")
    for key in ("bot_id", "owner_id"):
        _require(getattr(t, key).isdigit() or not getattr(t, key), f, f"twitch.{key}", "must be a numeric Twitch user id (not a login name)")
    _require(t.reconnect_max_s >= t.reconnect_initial_s, f, "twitch.reconnect_max_s", "must be >= twitch.reconnect_initial_s")
    _require(1 <= len(t.reward_title) <= 45, f, "twitch.reward_title", "must be 1-45 characters (Twitch's limit)")
    _require(len(t.reward_prompt) <= 200, f, "twitch.reward_prompt", "must be at most 200 characters (Twitch's limit)")
    names = [n for n in dataclasses.astuple(t.commands) if n]
    for key, name in dataclasses.asdict(t.commands).items():
        _require(name == "" or (name.isprintable() and " " not in name), f, f"twitch.commands.{key}", "must be one word")
    _require(len(set(names)) == len(names), f, "twitch.commands", "uses the same command word twice")


# --------------------------------------------------------------------------- secrets


SECRET_ENV = {
    "twitch_client_secret": "TWITCH_CLIENT_SECRET",
    "obs_password": "OBS_WEBSOCKET_PASSWORD",
    "dashboard_token": "STREAMER_DASHBOARD_TOKEN",
}


def secret(name: str) -> str | None:
    """A secret from its environment variable (never from the config file, never logged)."""
    value = os.environ.get(SECRET_ENV[name], "")
    return value or None


def example_path() -> Path:
    """config.example.toml shipped with the package (repo root in a checkout, package data when installed)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "config.example.toml", here.parent / "config.example.toml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config.example.toml is missing from this installation")
