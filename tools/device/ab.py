"""A/B of whole trees and class switches on one card: each variant runs a `streamer` command in its own
process, the variants alternated for several rounds, so clock drift and a cold card hit all of them.

    python tools/device/ab.py --rounds 2 --json $OUT/ab.json \
        --variant head=. \
        --variant old=.device-carry/trees/8239e27 \
        --variant head-bshd=.:streamer.model.fast.ops:FusedOps.Q_HEADS_FIRST=False \
        -- bench model W1 --variants fast --dtype bfloat16 --iters 40 --json

A variant is LABEL=TREE[:MODULE:ATTR.PATH=VALUE[,...]]: TREE is a checkout (`git archive REV streamer
kernels overlays | tar x`), run with its own `streamer_kernels` / `streamer_overlays` links ahead of
the device's site folder; the optional settings are `setattr`s made before the command runs (VALUE is a
Python literal), or `env:NAME=VALUE`, an environment variable of that process (e.g.
`env:TORCH_BLAS_PREFER_CUBLASLT=1`). The command's stdout must end with one JSON object (`--json`); its "variants" rows'
ms_p50 / ms_p99 / fps are tabulated per round. Written after a session lost the unversioned A/B script
it had kept in the ignored .device-carry/.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAUNCH = """
import ast, importlib, runpy, sys
for s in {sets!r}:
    mod, rest = s.split(":", 1)
    path, value = rest.split("=", 1)
    obj = importlib.import_module(mod)
    *owners, attr = path.split(".")
    for o in owners:
        obj = getattr(obj, o)
    setattr(obj, attr, ast.literal_eval(value))
    print("ab: set", s, file=sys.stderr)
import streamer, streamer_kernels
print("ab: imports", streamer.__file__, *streamer_kernels.__path__, file=sys.stderr)
sys.argv = ["streamer", *{args!r}]
runpy.run_module("streamer", run_name="__main__")
"""


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    label, _, spec = text.partition("=")
    tree, _, sets = spec.partition(":")
    if not label or not tree:
        raise SystemExit(f"--variant {text!r}: want LABEL=TREE[:MODULE:ATTR=VALUE,...]")
    settings = [s for s in sets.split(",") if s] if sets else []
    if not (Path(tree) / "streamer").is_dir():
        raise SystemExit(f"--variant {text!r}: {tree} holds no streamer/ package")
    for s in settings:
        if s.startswith("env:") and "=" in s:
            continue
        if s.count(":") != 1 or "=" not in s:
            raise SystemExit(f"--variant {text!r}: setting {s!r} is not MODULE:ATTR.PATH=VALUE")
        try:
            ast.literal_eval(s.split("=", 1)[1])
        except (ValueError, SyntaxError):
            raise SystemExit(f"--variant {text!r}: {s!r}'s value is not a Python literal") from None
    return label, Path(tree).resolve(), settings


def tree_env(tree: Path, links: Path) -> dict[str, str]:
    """PYTHONPATH with this tree's kernels/overlays packages first, then the tree, then the rest."""
    links.mkdir(parents=True, exist_ok=True)
    for pkg, folder in (("streamer_kernels", "kernels"), ("streamer_overlays", "overlays")):
        link = links / pkg
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(tree / folder)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(links), str(tree), env.get("PYTHONPATH", "")])
    return env


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object the command printed last (logs may come before it)."""
    start = stdout.rfind("\n{")
    start = 0 if stdout.startswith("{") and start < 0 else start + 1
    return json.loads(stdout[start:])


def run_one(label: str, tree: Path, settings: list[str], args: list[str], links: Path, timeout: float) -> dict:
    code = LAUNCH.format(sets=[s for s in settings if not s.startswith("env:")], args=args)
    env = tree_env(tree, links / label)
    for s in settings:
        if s.startswith("env:"):
            name, value = s.removeprefix("env:").split("=", 1)
            env[name] = value
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"label": label, "error": f"exit {proc.returncode}", "wall_s": wall}
    report = last_json(proc.stdout)
    lines = proc.stderr.splitlines()
    imports = [ln for ln in lines if ln.startswith("ab: imports")]
    applied = [s for s in settings if s.startswith("env:")]
    applied += [ln.removeprefix("ab: set ") for ln in lines if ln.startswith("ab: set ")]
    return {"label": label, "wall_s": wall, "imports": imports[:1], "settings": applied, "report": report}


def rows(result: dict) -> list[str]:
    if "error" in result:
        return [f"{result['label']:24s} | {result['error']}"]
    out = []
    for v in result["report"].get("variants", []):
        if "ms_p50" in v:
            out.append(
                f"{result['label']:24s} | {v['variant']:6s} {v.get('mode', ''):12s} | p50 {v['ms_p50']:7.3f} ms"
                f" | p99 {v['ms_p99']:7.3f} | {v['fps']:6.1f} fps | {v.get('peak_mem_gb', 0):.2f} GB"
            )
        else:
            out.append(f"{result['label']:24s} | {v.get('variant')} | {v.get('skipped') or v.get('error')}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: ab.py [--rounds N] [--json FILE] --variant LABEL=TREE[:...] ... -- COMMAND ARGS")
    cut = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--variant", action="append", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per process")
    opts = p.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    variants = [parse_variant(v) for v in opts.variant]
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ab-links-") as links:
        for r in range(opts.rounds):
            for label, tree, settings in variants:
                try:
                    res = run_one(label, tree, settings, command, Path(links), opts.timeout)
                except subprocess.TimeoutExpired:
                    res = {"label": label, "error": f"timed out after {opts.timeout:.0f} s"}
                res["round"] = r + 1
                results.append(res)
                for line in rows(res):
                    print(f"round {r + 1} | {line}", flush=True)
                if r == 0 and res.get("imports"):  # that each tree ran its own code
                    print(f"          {res['imports'][0]}", flush=True)
                if opts.json:  # after every process: a call cut short keeps what ran
                    Path(opts.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
