"""The settings themselves: one frozen dataclass per TOML section, and what the presets' 0 / -1 mean.

Every section of the config file is a frozen dataclass below; the loader (loading.py) walks their type
hints, so a new key is one field here plus one line in config.example.toml. The comment beside a field
is its documentation. `PresetDefaults` and `effective_strength` / `effective_window` live here because
they say what a field's sentinel value means, which every reader of ModelSettings needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
