"""The Hugging Face Hub through `huggingface_hub`: what each file should be, fetching it, checking it.

Everything that touches the network goes through the real library, so HF_TOKEN, HF_ENDPOINT,
HF_HUB_OFFLINE, its cache, its resumable downloads (a dropped connection continues with a Range
request; an interrupted run continues from the `.incomplete` file) and its progress bars all work as
users know them. This module adds what the library does not do: it checks every file against the
Hub's metadata (size, and the LFS sha256 or the git object id) and fetches a bad file again, and it
turns the library's exceptions into one-line errors that say what to do.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx2  # huggingface_hub 2.x's HTTP client: its network errors are the "no network" case
from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from streamer.models.catalogue import HubFile

log = logging.getLogger(__name__)

T = TypeVar("T")


class ModelsError(RuntimeError):
    """A pull or list that cannot go on, phrased for the streamer (what failed, what to do)."""


@dataclass(frozen=True)
class RemoteFile:
    """A catalogue file as the Hub describes it at one commit."""

    file: HubFile
    commit: str
    size: int
    sha256: str | None  # LFS files (all the weights)
    blob_id: str | None  # git object id, for small files kept in git itself


@dataclass(frozen=True)
class Storage:
    """Where files go: `dir` = DIR/<repo name>/<path> (huggingface_hub's local_dir), else its cache."""

    dir: Path | None
    cache_dir: Path

    @classmethod
    def at(cls, folder: str | Path | None) -> Storage:
        # Read at call time (not import time), so HF_HUB_CACHE set by a caller or a test is honoured.
        return cls(Path(folder).expanduser().resolve() if folder else None, Path(constants.HF_HUB_CACHE))

    def root(self) -> Path:
        return self.dir or self.cache_dir

    def local_dir(self, f: HubFile) -> Path | None:
        return self.dir / f.repo.split("/")[1] if self.dir else None

    def existing(self, f: HubFile, commit: str | None = None) -> Path | None:
        """The file if it is already here (complete downloads only: partial ones are `.incomplete`)."""
        if self.dir is not None:
            p = self.dir / f.repo.split("/")[1] / f.path
            return p if p.is_file() else None
        found = try_to_load_from_cache(f.repo, f.path, cache_dir=self.cache_dir, revision=commit)
        return Path(found) if isinstance(found, str) else None


def endpoint() -> str:
    """The Hub the library talks to: HF_ENDPOINT when set (read now, not at import), else its default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    return constants.is_offline_mode()


def remote_files(files: Iterable[HubFile]) -> list[RemoteFile]:
    """Each file's commit, size and hash from the Hub (one model_info call per repo), before any download."""
    files = list(files)
    api = HfApi(endpoint=endpoint())
    out: list[RemoteFile] = []
    for repo in dict.fromkeys(f.repo for f in files):
        info = _hub_call(functools.partial(api.model_info, repo, revision="main", files_metadata=True), repo)
        siblings = {s.rfilename: s for s in info.siblings or []}
        for f in (f for f in files if f.repo == repo):
            s = siblings.get(f.path)
            if s is None or info.sha is None:
                raise ModelsError(
                    f"{repo} has no file {f.path} on {endpoint()} (commit {info.sha}); the catalogue is out of "
                    "date, please report it"
                )
            size = s.lfs.size if s.lfs is not None else s.size
            if size is None:
                raise ModelsError(f"{endpoint()} gave no size for {repo}/{f.path}; cannot verify it")
            out.append(RemoteFile(f, info.sha, size, s.lfs.sha256 if s.lfs is not None else None, s.blob_id))
    return out


def fetch(r: RemoteFile, storage: Storage) -> Path:
    """Download (or reuse) one file and verify it; a bad file is deleted and fetched once more."""

    def download(force: bool) -> Path:
        f = r.file
        return Path(
            _hub_call(
                lambda: hf_hub_download(
                    f.repo, f.path, revision=r.commit, endpoint=endpoint(), cache_dir=storage.cache_dir,
                    local_dir=storage.local_dir(f), force_download=force,
                ),
                f.repo,
            )
        )  # fmt: skip

    path = download(force=False)
    problem = verify(path, r)
    if problem is None:
        return path
    log.warning("%s: %s; deleting it and downloading it again", path, problem)
    remove(path)
    path = download(force=True)
    problem = verify(path, r)
    if problem is not None:
        remove(path)
        raise ModelsError(
            f"{r.file.repo}/{r.file.path}: {problem}, again after a fresh download; deleted it. The Hub or a "
            f"proxy between you and {endpoint()} serves damaged data: try again later or set HF_ENDPOINT"
        )
    return path


def verify(path: Path, r: RemoteFile) -> str | None:
    """What is wrong with `path` compared with the Hub's metadata, or None when it matches."""
    size = path.stat().st_size
    if size != r.size:
        return f"size {size:,} bytes, the Hub says {r.size:,}"
    if r.sha256 is not None:
        if size > 100_000_000:
            log.info("checking the sha256 of %s (%s)", path.name, human_bytes(size))
        got = _digest(path, hashlib.sha256())
        return None if got == r.sha256 else f"sha256 {got}, the Hub says {r.sha256}"
    if r.blob_id is not None:  # git's object id: sha1 over "blob <size>\0" and the content
        got = _digest(path, hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False))
        return None if got == r.blob_id else f"git object id {got}, the Hub says {r.blob_id}"
    return None


def _digest(path: Path, h: hashlib._Hash) -> str:
    with path.open("rb") as fh:
        while block := fh.read(16 << 20):
            h.update(block)
    return h.hexdigest()


def remove(path: Path) -> None:
    """Delete a downloaded file; in the cache the snapshot entry is a link to a blob, delete both."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path.absolute():
        target.unlink(missing_ok=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _hub_call(call: Callable[[], T], repo: str) -> T:
    try:
        return call()
    except Exception as e:
        problem = explain(e, repo)
        if problem is None:
            raise
        raise ModelsError(problem) from e


def explain(e: BaseException, repo: str) -> str | None:
    """One line for a library error: what happened and the setting that fixes it (None: not a Hub error).

    The token is never part of the message: only whether the Hub refused the request."""
    ep = endpoint()
    if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None:  # hf_hub_download wraps the HEAD error
        inner = explain(e.__cause__, repo)
        if inner is not None:
            return inner
    if isinstance(e, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so {ep} is not asked about {repo}; unset it to download"
    if isinstance(e, GatedRepoError):
        return (
            f"{repo} is gated on {ep}: accept its terms on the repo's page, then set HF_TOKEN to a read token "
            "of that account (https://huggingface.co/settings/tokens)"
        )
    status = e.response.status_code if isinstance(e, HfHubHTTPError) and e.response is not None else None
    if isinstance(e, RepositoryNotFoundError) or status in (401, 403):
        return (
            f"{ep} refused {repo} (HTTP {status}): set HF_TOKEN to a token with read access "
            "(https://huggingface.co/settings/tokens), or check that the repo still exists"
        )
    network = _network_cause(e)
    if network is not None:
        return (
            f"cannot reach {ep} ({network}); check the connection or proxy, set HF_ENDPOINT to a reachable "
            "mirror, or set HF_HUB_OFFLINE=1 to use files that are already downloaded"
        )
    if isinstance(e, RevisionNotFoundError | EntryNotFoundError):
        return f"{ep} has no such file or revision in {repo}; the catalogue is out of date, please report it"
    if status is not None:
        return f"{ep} answered HTTP {status} for {repo}; try again later"
    return None


def _network_cause(e: BaseException) -> str | None:
    """The network failure behind `e`, if there is one (the library wraps it in LocalEntryNotFoundError)."""
    seen: BaseException | None = e
    wrapped = isinstance(e, LocalEntryNotFoundError)
    while seen is not None:
        if isinstance(seen, httpx2.TransportError | ConnectionError | TimeoutError):
            return str(seen) or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return "no answer" if wrapped else None
