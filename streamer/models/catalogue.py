"""The weights `streamer models pull` knows: which Hub repo and file each part comes from.

Repo ids and paths are the ones the upstream READMEs download (../shared/design/weights.md). A DiT entry
brings what it cannot run without (`needs`): the umT5 text encoder with its tokenizer from the Wan repo
(never that repo's 5.7 GB DiT) and the TAEHV autoencoder. Sizes here are the published, rounded ones:
`models list` shows them offline; downloads, the disk-space check and verification always use the
Hub's exact metadata.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

# What a file is to the daemon; decides which [model] key points at it (see config_values in pull.py).
Role = Literal["checkpoint", "lora", "vae", "text_encoder", "tokenizer"]

WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
WAN_T5 = "models_t5_umt5-xxl-enc-bf16.pth"


@dataclass(frozen=True)
class HubFile:
    repo: str  # "owner/name" on the Hub
    path: str  # path inside the repo
    role: Role
    approx_bytes: int  # published size (rounded); only for offline listing


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    good_for: str
    files: tuple[HubFile, ...]
    needs: tuple[str, ...] = ()  # other entries pulled with this one
    preset: str = ""  # model.preset the DiT runs as ("" = the entry has no DiT)


_TOKENIZER = tuple(
    HubFile(WAN_REPO, f"google/umt5-xxl/{name}", "tokenizer", size)
    for name, size in (
        ("special_tokens_map.json", 6_600),
        ("spiece.model", 4_550_000),
        ("tokenizer.json", 16_800_000),
        ("tokenizer_config.json", 61_700),
    )
)

ENTRIES: tuple[Entry, ...] = (
    Entry(
        "self-forcing",
        "Self-Forcing DMD: Wan2.1 1.3B made causal, 4 steps",
        "live restyling at real-time speed; the default choice",
        (HubFile("gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt", "checkpoint", 5_680_000_000),),
        needs=("wan-t5", "taehv"),
        preset="wan-1.3b",
    ),
    Entry(
        "streamdiffusionv2",
        "StreamDiffusionV2 causal DMD, trained for video-to-video",
        "camera restyling that keeps the layout (its own v2v training)",
        (HubFile("jerryfeng/StreamDiffusionV2", "wan_causal_dmd_v2v/model.pt", "checkpoint", 5_700_000_000),),
        needs=("wan-t5", "taehv"),
        preset="wan-1.3b",
    ),
    Entry(
        "causvid",
        "CausVid autoregressive DMD (a full training snapshot, hence its size)",
        "comparison with the first causal Wan distillation",
        (HubFile("tianweiy/CausVid", "autoregressive_checkpoint/model.pt", "checkpoint", 11_350_000_000),),
        needs=("wan-t5", "taehv"),
        preset="wan-1.3b",
    ),
    Entry(
        "longlive",
        "LongLive 1.3B base + its rank-256 LoRA, merged at load",
        "long streams with frequent prompt switches",
        (
            HubFile("Efficient-Large-Model/LongLive-1.3B", "models/longlive_base.pt", "checkpoint", 5_300_000_000),
            HubFile("Efficient-Large-Model/LongLive-1.3B", "models/lora.pt", "lora", 1_400_000_000),
        ),
        needs=("wan-t5", "taehv"),
        preset="wan-1.3b",
    ),
    Entry(
        "wan-t5",
        "umT5-XXL text encoder (bf16) + its tokenizer, from the Wan repo without its DiT",
        "the prompt encoder every Wan entry needs (pulled with each)",
        (HubFile(WAN_REPO, WAN_T5, "text_encoder", 11_360_000_000), *_TOKENIZER),
    ),
    Entry(
        "taehv",
        "TAEHV tiny autoencoder for Wan 2.1 latents",
        "fast encode/decode in Wan's latent space (pulled with each Wan entry)",
        (HubFile("madebyollin/taehv", "taew2_1.pth", "vae", 22_600_000),),
    ),
)

NAMES = tuple(e.name for e in ENTRIES)


class UnknownEntryError(KeyError):
    """A name that is not in the catalogue; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def find(name: str) -> Entry:
    """The entry called `name`; UnknownEntryError with a did-you-mean and the valid names otherwise."""
    for e in ENTRIES:
        if e.name == name.strip().lower():
            return e
    close = difflib.get_close_matches(name.lower(), NAMES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownEntryError(f"unknown model {name!r}; {hint}valid names: {', '.join(NAMES)}")


def all_files(entry: Entry) -> tuple[HubFile, ...]:
    """The entry's own files, then those of the entries it needs, each once."""
    out: list[HubFile] = []
    for e in (entry, *(find(n) for n in entry.needs)):
        out += [f for f in e.files if f not in out]
    return tuple(out)
