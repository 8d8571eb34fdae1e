"""Fuzz: broken checkpoints and malicious pickles are refused, never executed (issue 15).

A tiny real DiT checkpoint is corrupted many ways, seeded and bounded: truncated at random offsets,
bytes overwritten in the safetensors header and in the zip's pickle and central directory, wrong dtypes
(real integer tensors, and headers that lie about the dtype or shape), non-tensor entries, broken shard
indexes, and pickles whose __reduce__ would create a marker file. Every input must end in one of two
outcomes: a CheckpointError naming the file, or (for a corruption that touched nothing that matters, e.g.
header padding) a model with exactly the original weights. Any other exception fails the test, and the
marker file must never exist. Each family prints its counts (`pytest -s` shows them).
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import shlex
import struct
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.model.config import DiTConfig
from streamer.model.dit import DiT
from streamer.model.weights.checkpoints import CheckpointError, load_dit

SEED = 15
CFG = DiTConfig(dim=64, num_layers=2, num_heads=1, ffn_dim=96, text_dim=32)  # heads 1: what the shapes imply


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    return {k: v.clone() for k, v in DiT(CFG).state_dict().items()}


def outcome(path: Path, ref: dict[str, torch.Tensor]) -> str:
    """'refused' (a CheckpointError naming the file) or 'loaded intact'; anything else fails the test."""
    try:
        model, _ = load_dit(path)
    except CheckpointError as e:
        assert path.name in str(e), f"the error does not name {path.name}: {e}"
        return "refused"
    got = model.state_dict()
    assert set(got) == set(ref), f"{path.name} loaded with other keys"
    bad = [k for k in ref if not torch.equal(got[k].to(ref[k].dtype), ref[k])]
    assert not bad, f"{path.name} loaded with changed weights in {bad[:3]}: a corruption went unnoticed"
    return "loaded intact"


def report(capsys: pytest.CaptureFixture[str], family: str, counts: Counter[str]) -> None:
    with capsys.disabled():
        print(f"\ncheckpoint fuzz [{family}] seed {SEED}: {sum(counts.values())} inputs: {dict(sorted(counts.items()))}")


def _offsets(rng: random.Random, lo: int, hi: int, n: int, edges: tuple[int, ...] = ()) -> list[int]:
    picks = {e for e in edges if lo <= e < hi} | {rng.randrange(lo, hi) for _ in range(n)}
    return sorted(picks)


def _fuzz_bytes(tmp: Path, name: str, data: bytes, edits: list[Callable[[bytearray], None]], ref, counts) -> None:
    for i, edit in enumerate(edits):
        buf = bytearray(data)
        edit(buf)
        path = tmp / f"{i:03d}-{name}"
        path.write_bytes(bytes(buf))
        counts[outcome(path, ref)] += 1
        path.unlink()


def _overwrite(at: int, value: int) -> Callable[[bytearray], None]:
    def edit(buf: bytearray) -> None:
        buf[at] = value if value != buf[at] else value ^ 0xFF

    return edit


def _truncate(at: int) -> Callable[[bytearray], None]:
    def edit(buf: bytearray) -> None:
        del buf[at:]

    return edit


# ---- safetensors --------------------------------------------------------------------------------------
def test_safetensors_truncated_and_header_overwritten(tmp_path: Path, ref, capsys) -> None:
    rng = random.Random(SEED)
    good = tmp_path / "good.safetensors"
    save_file(ref, str(good))
    data = good.read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    assert outcome(good, ref) == "loaded intact"  # the control: the uncorrupted file loads
    counts: Counter[str] = Counter()
    cuts = _offsets(rng, 0, len(data), 40, edges=(0, 1, 7, 8, 9, header_end - 1, header_end, header_end + 1, len(data) - 1))
    _fuzz_bytes(tmp_path, "cut.safetensors", data, [_truncate(c) for c in cuts], ref, counts)
    writes = [_overwrite(at, rng.randrange(256)) for at in _offsets(rng, 0, header_end, 80, edges=(0, 3, 7, 8))]
    _fuzz_bytes(tmp_path, "header.safetensors", data, writes, ref, counts)
    report(capsys, "safetensors truncated / header bytes", counts)
    assert counts["refused"] >= len(cuts)  # every truncation is refused: a cut file never loads


def _rewrite_header(data: bytes, change: Callable[[dict], None]) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


@pytest.mark.parametrize("real_dtype", [torch.int32, torch.int8, torch.bool, torch.uint8, torch.int64])
def test_safetensors_with_non_float_tensors(tmp_path: Path, ref, capsys, real_dtype: torch.dtype) -> None:
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    for i in range(6):
        keys = rng.sample(sorted(ref), k=rng.randrange(1, 8))
        sd = {k: (v.to(real_dtype) if k in keys else v) for k, v in ref.items()}
        path = tmp_path / f"{i}-ints.safetensors"
        save_file(sd, str(path))
        counts[outcome(path, ref)] += 1
    report(capsys, f"safetensors with {real_dtype} tensors", counts)
    assert counts == {"refused": 6}


def test_safetensors_headers_that_lie_about_dtype_or_shape(tmp_path: Path, ref, capsys) -> None:
    rng = random.Random(SEED)
    good = tmp_path / "good.safetensors"
    save_file(ref, str(good))
    data = good.read_bytes()
    names = sorted(k for k in json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]]) if k != "__metadata__")
    counts: Counter[str] = Counter()
    for i in range(40):
        key = rng.choice(names)
        kind = rng.choice(["dtype", "shape"])

        def change(header: dict, key: str = key, kind: str = kind) -> None:
            if kind == "dtype":
                header[key]["dtype"] = rng.choice(["F16", "BF16", "F64", "I32", "I64", "BOOL", "U8", "F8_E4M3", "X9"])
            else:
                shape = header[key]["shape"]
                header[key]["shape"] = [*shape[:-1], shape[-1] * 2] if shape else [2]

        path = tmp_path / f"{i:02d}-lie.safetensors"
        path.write_bytes(_rewrite_header(data, change))
        counts[outcome(path, ref)] += 1
    report(capsys, "safetensors header dtype/shape lies", counts)
    assert counts == {"refused": 40}


def test_broken_shard_indexes(tmp_path: Path, ref, capsys) -> None:
    keys = sorted(ref)
    save_file({k: ref[k] for k in keys[:30]}, str(tmp_path / "part-1.safetensors"))
    save_file({k: ref[k] for k in keys[30:]}, str(tmp_path / "part-2.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    good = {"weight_map": {k: "part-1.safetensors" if i < 30 else "part-2.safetensors" for i, k in enumerate(keys)}}
    broken: list[str] = [
        json.dumps(good)[:40],  # truncated JSON
        json.dumps({"weight_map": ["part-1.safetensors"]}),
        json.dumps({"weight_map": {keys[0]: "part-3.safetensors"}}),  # a shard that is not there
        json.dumps({"weight_map": {**good["weight_map"], "blocks.9.x": "part-1.safetensors"}}),  # in no shard
        json.dumps({"weight_map": {keys[0]: "../good.safetensors"}}),  # outside the folder: still only read
        json.dumps({"metadata": {}}),
        "\x00\xff" * 20,
    ]
    counts: Counter[str] = Counter()
    for text in broken:
        index.write_bytes(text.encode("latin-1"))
        counts[outcome(index, ref)] += 1
    index.write_text(json.dumps(good))
    assert outcome(index, ref) == "loaded intact"  # the control: the same shards load with a sound index
    report(capsys, "sharded index", counts)
    assert counts == {"refused": len(broken)}


# ---- torch pickles (zip and legacy) --------------------------------------------------------------------
def test_torch_zip_truncated_and_overwritten(tmp_path: Path, ref, capsys) -> None:
    rng = random.Random(SEED)
    good = tmp_path / "good.pt"
    torch.save({"generator": ref}, good)
    data = good.read_bytes()
    with zipfile.ZipFile(good) as z:
        pkl = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
        pkl_start = pkl.header_offset
        pkl_end = pkl.header_offset + 30 + len(pkl.filename) + len(pkl.extra) + pkl.file_size
    assert outcome(good, ref) == "loaded intact"  # the control: the uncorrupted file loads
    eocd = data.rfind(b"PK\x05\x06")  # the end-of-central-directory record holds where the directory starts
    directory = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0]
    assert data[directory : directory + 4] == b"PK\x01\x02"
    counts: Counter[str] = Counter()
    cuts = _offsets(rng, 0, len(data), 40, edges=(0, 1, 4, pkl_end, directory, len(data) - 22, len(data) - 1))
    _fuzz_bytes(tmp_path, "cut.pt", data, [_truncate(c) for c in cuts], ref, counts)
    writes = [_overwrite(at, rng.randrange(256)) for at in _offsets(rng, pkl_start, pkl_end, 60)]
    writes += [_overwrite(at, rng.randrange(256)) for at in _offsets(rng, directory, len(data), 60)]
    _fuzz_bytes(tmp_path, "flip.pt", data, writes, ref, counts)
    report(capsys, "torch zip truncated / pickle and directory bytes", counts)
    assert counts["refused"] >= len(cuts)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_pickles_with_wrong_contents(tmp_path: Path, ref, capsys, legacy: bool) -> None:
    keys = sorted(ref)
    cases: list[object] = [
        {k: v.to(torch.int64) for k, v in ref.items()},
        {k: (v.to(torch.complex64) if k == keys[0] else v) for k, v in ref.items()},
        {k: (v.bool() if k == keys[5] else v) for k, v in ref.items()},
        {"generator": {**ref, keys[1]: 3}},
        {"generator": {**ref, keys[2]: "weights"}},
        {"generator": [ref[k] for k in keys]},
        {"generator": {}},
        [ref[k] for k in keys],
        torch.zeros(3),
        None,
        {"generator": {k: v.to_sparse() if k == keys[3] else v for k, v in ref.items()}},
    ]
    counts: Counter[str] = Counter()
    for i, obj in enumerate(cases):
        path = tmp_path / f"{i:02d}-wrong.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        counts[outcome(path, ref)] += 1
    report(capsys, f"torch {'legacy' if legacy else 'zip'} pickle, wrong contents", counts)
    assert counts == {"refused": len(cases)}


class Payload:
    """Unpickling this calls `func(*args)`: what a malicious checkpoint would do."""

    def __init__(self, func: Callable[..., object], args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, ...]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, (f"touch {shlex.quote(str(marker))}",)),
        "builtins.exec": Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "builtins.open": Payload(builtins.open, (str(marker), "w")),
        "pathlib.Path.touch": Payload(Path.touch, (marker,)),
    }


CONTAINERS = ("zip, top level", "zip, beside the weights", "zip, inside the state dict", "legacy format",
              *(f"raw pickle protocol {n}" for n in range(pickle.HIGHEST_PROTOCOL + 1)))  # fmt: skip


def _write_malicious(path: Path, payload: Payload, where: str, ref: dict[str, torch.Tensor]) -> None:
    if where == "zip, top level":
        torch.save(payload, path)
    elif where == "zip, beside the weights":
        torch.save({"generator": ref, "x": payload}, path)
    elif where == "zip, inside the state dict":
        torch.save({"generator": {**ref, "evil": payload}}, path)
    elif where == "legacy format":
        torch.save({"generator": ref, "x": payload}, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, int(where.rsplit(" ", 1)[1])))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the raw protocol 3-5 files
def test_malicious_pickles_are_refused_and_never_run(tmp_path: Path, ref, capsys) -> None:
    marker = tmp_path / "PWNED"
    counts: Counter[str] = Counter()
    for name, payload in _payloads(marker).items():
        # The control: each payload really does create the marker when unpickled without protection.
        pickle.loads(pickle.dumps(payload))
        assert marker.exists(), f"{name} payload is inert: the test would prove nothing"
        marker.unlink()
        for where in CONTAINERS:
            for suffix in (".pt", ".pth"):
                path = tmp_path / f"{name}-{sum(counts.values())}{suffix}"
                _write_malicious(path, payload, where, ref)
                assert outcome(path, ref) == "refused", f"{name} ({where}) was not refused"
                assert not marker.exists(), f"{name} ({where}) ran while being loaded"
                counts[f"refused, not run: {where}"] += 1
    report(capsys, "malicious pickles (os.system, exec, open, Path.touch)", counts)
    assert not marker.exists()
