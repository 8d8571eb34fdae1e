"""A local Hugging Face Hub for tests: the HTTP routes `huggingface_hub` really uses, on 127.0.0.1.

Routes (read from huggingface_hub 2.x: hf_api.model_info, file_download.get_hf_file_metadata / http_get):
- `GET /api/models/{repo}/revision/{rev}?blobs=true`: model info with siblings (size, blobId, lfs).
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: a file kept in git is served here with `ETag` = its git object
  id; an LFS file answers `302` to a second server (the "CDN", another origin, as on the real Hub, so
  the library stops its HEAD there) with `X-Linked-Etag` = sha256 and `X-Linked-Size`. Every answer
  carries `X-Repo-Commit`.
- CDN `HEAD|GET /lfs/{sha256}`: the bytes, with `Range` (206 + `Content-Range`) for resumed downloads.

Faults for tests: `drop_once` (the first GET of a path sends half of it, then closes the connection),
`corrupt_once` (the first GET serves wrong bytes of the right length), `token` (requests without
`Authorization: Bearer <token>` get 401). Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from streamer.models.catalogue import ENTRIES, WAN_REPO

# Files of the Wan repo that no entry may fetch: its 5.7 GB DiT, the full VAE and the DiT's config.
WAN_EXTRAS = ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "config.json")


def fake_content(repo: str, path: str) -> bytes:
    """Small and distinct per file; json files stay under the LFS threshold (kept in git, as on the Hub)."""
    if path.endswith(".json"):
        return f'{{"f":"{path[-20:]}"}}'.encode()
    return f"{repo}/{path}|".encode() * 40


def catalogue_files() -> dict[tuple[str, str], bytes]:
    """Every catalogue file at its real repo and path, plus the Wan files no entry may fetch."""
    files = {(f.repo, f.path): fake_content(f.repo, f.path) for e in ENTRIES for f in e.files}
    return files | {(WAN_REPO, p): fake_content(WAN_REPO, p) for p in WAN_EXTRAS}


@dataclass(frozen=True)
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes]  # (repo, path) -> content
    lfs_from: int = 64  # files at least this long are LFS files (real weights are all LFS)
    token: str | None = None
    drop_once: set[str] = field(default_factory=set)  # repo paths
    corrupt_once: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)
    endpoint: str = ""
    cdn: str = ""

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def is_lfs(self, content: bytes) -> bool:
        return len(content) >= self.lfs_from

    def downloads(self) -> list[Seen]:
        """Requests that carried file bytes (GETs of content, not metadata)."""
        return [r for r in self.requests if r.method == "GET" and ("/resolve/" in r.path or r.server == "cdn")]

    def sibling(self, path: str, content: bytes) -> dict[str, object]:
        out: dict[str, object] = {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}
        if self.is_lfs(content):
            # the real Hub: `size`/`blobId` describe the pointer file, `lfs` the content
            out["lfs"] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "pointerSize": 134}
            out["size"], out["blobId"] = 134, hashlib.sha1(path.encode()).hexdigest()
        return out


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(Seen(role, self.command, self.path, dict(self.headers.items())))
            if role == "hub" and hub.token is not None and self.headers.get("authorization") != f"Bearer {hub.token}":
                return self._send(
                    401, b'{"error":"Invalid username or password."}', {"X-Error-Message": "Invalid credentials"}, body
                )
            url = urlsplit(self.path)
            if role == "cdn":
                return self._cdn(unquote(url.path), body)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", url.path)
            if m:
                return self._info(m.group(1), body)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", unquote(url.path))
            if m:
                return self._resolve(m.group(1), m.group(3), body)
            self._send(404, b"not found", {}, body)

        def _info(self, repo: str, body: bool) -> None:
            siblings = [hub.sibling(p, c) for (r, p), c in hub.files.items() if r == repo]
            if not siblings:
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
            doc = {"id": repo, "modelId": repo, "sha": hub.commit(repo), "private": False, "siblings": siblings}
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"}, body)

        def _resolve(self, repo: str, path: str, body: bool) -> None:
            content = hub.files.get((repo, path))
            commit = {"X-Repo-Commit": hub.commit(repo)}
            if content is None:
                return self._send(404, b"entry not found", {**commit, "X-Error-Code": "EntryNotFound"}, body)
            if not hub.is_lfs(content):
                return self._content(f"{repo}/{path}", content, {**commit, "ETag": f'"{git_blob_id(content)}"'}, body)
            sha = hashlib.sha256(content).hexdigest()
            self._send(302, b"", {**commit, "Location": f"{hub.cdn}/lfs/{sha}?p={repo}/{path}",
                                  "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(content)),
                                  "ETag": '"pointer"'}, body)  # fmt: skip

        def _cdn(self, path: str, body: bool) -> None:
            sha = path.removeprefix("/lfs/")
            for (repo, name), content in hub.files.items():
                if hashlib.sha256(content).hexdigest() == sha:
                    return self._content(f"{repo}/{name}", content, {"ETag": f'"{sha}"'}, body)
            self._send(404, b"no such blob", {}, body)

        def _content(self, key: str, content: bytes, headers: dict[str, str], body: bool) -> None:
            start = 0
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if rng:
                start = int(rng.group(1))
                headers = {**headers, "Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"}
            if body and key in hub.corrupt_once:
                hub.corrupt_once.discard(key)
                content = bytes(b ^ 0xFF for b in content)
            part = content[start:]
            if body and key in hub.drop_once:  # half the bytes, then the connection goes away
                hub.drop_once.discard(key)
                self._head(206 if rng else 200, len(part), headers)
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(206 if rng else 200, part, headers, body)

        def _head(self, status: int, length: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
            self._head(status, len(data), headers)
            if body:
                self.wfile.write(data)

    return Handler


@contextmanager
def running(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve `hub` (and its CDN) on free ports until the block ends; sets hub.endpoint / hub.cdn."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, role)) for role in ("hub", "cdn")]
    hub.endpoint, hub.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield hub
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
