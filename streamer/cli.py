"""`streamer` command line: run | doctor | init | bench | model inspect | models | check-prompt | obs setup | twitch login | train | train evaluate | train widen-input | train widen-luma | train widen-ffn | train refiner | prune.

Each command is implemented in the module that owns the capability and imported only when that
command runs, so `streamer doctor` works even when an optional extra (twitchio, obsws) is missing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

from streamer import __version__
from streamer.config import CheckpointKey, ConfigError, example_path
from streamer.doctor import clip

DEFAULT_CONFIG = "streamer.toml"

# command name -> "module:function"; each function takes the parsed args and returns an exit code.
_HANDLERS = {
    "run": "streamer.app:run_command",
    "doctor": "streamer.doctor:doctor_command",
    "bench pipeline": "streamer.bench.pipeline:bench_pipeline_command",
    "bench model": "streamer.bench.model:bench_model_command",
    "model inspect": "streamer.model.weights.checkpoints:inspect_command",
    "models pull": "streamer.models.commands:pull_command",
    "models list": "streamer.models.commands:list_command",
    "check-prompt": "streamer.control.policy.moderation:check_prompt_command",
    "obs setup": "streamer.control.obs.controller:setup_command",
    "twitch login": "streamer.control.twitch.auth:login_command",
    "train": "streamer.train.commands:train_command",
    "prune": "streamer.train.prune:prune_command",
    "soak": "streamer.soak.command:soak_command",
}


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    module, func = _HANDLERS[name].split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def init_command(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if args.gpu:  # fills [model] for the CUDA card; an existing file keeps its other keys
        from streamer.model.gpu_plan import init_gpu

        return init_gpu(target)
    try:
        if target.exists() and not args.force:
            print(f"{clip(str(target))} already exists; use --force to overwrite it", file=sys.stderr)
            return 1
        if target.is_dir():
            print(f"{clip(str(target))} is a folder; name the file to write, e.g. {target.name}/{DEFAULT_CONFIG}", file=sys.stderr)
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(example_path(), target)
    except OSError as e:  # under a file, in /proc, read-only, a name too long: say so in one line
        why = ("a part of the path is a file, not a folder" if isinstance(e, FileExistsError | NotADirectoryError)
               else e.strerror or str(e))  # fmt: skip
        print(f"cannot write {clip(str(target))}: {why}", file=sys.stderr)
        return 1
    print(f"wrote {target}; edit it, then run: streamer doctor --config {target}")
    return 0


def number(kind: type[int] | type[float], minimum: float, *, zero_ok: bool = False) -> Callable[[str], float]:
    """An argparse `type` for a finite number >= minimum (or exactly 0 when zero_ok: "the default"); nan,
    inf and out-of-range values are refused by argparse with one line, before any command runs."""

    def parse(text: str) -> float:
        shown = repr(clip(text, 40))
        if len(text) > 40:  # no count or length here has 40 digits; int() of 5000 digits would even raise
            raise argparse.ArgumentTypeError(f"{shown} is too long for a number")
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shown} is not a finite number")
        if not (value >= minimum or (zero_ok and value == 0)):
            floor = f"{minimum:g}" if kind is float else f"{int(minimum)}"
            raise argparse.ArgumentTypeError(f"{shown} must be {'0 or ' if zero_ok else ''}at least {floor}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = number(int, 1)  # iterations, batches, pixels, steps
FRAMES = number(int, 0)  # 0 = no limit
DEFAULT_OR_COUNT = number(int, 1, zero_ok=True)  # 0 = the command's default
DURATION = number(float, 1e-3)  # seconds or minutes: any positive length of time
FPS = number(float, 1.0)


def _gpus(text: str) -> int | str:
    """`--gpus`: a count >= 1 or 'all' (model.gpus)."""
    return "all" if text == "all" else int(COUNT(text))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def config_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", "-c", metavar="FILE", default=UNSET,
                       help=f"TOML config (default: ./{DEFAULT_CONFIG} when present, else the embedded defaults)")  # fmt: skip

    q = sub.add_parser("run", help="run the daemon until Ctrl-C / SIGTERM")
    config_arg(q)
    q.add_argument("--frames", type=FRAMES, default=0, help="stop after N output frames (0 = run until stopped)")
    q.add_argument("--record", metavar="PATH", help="also record the output to PATH")
    q.add_argument("--no-console", action="store_true", help="do not read prompts from the terminal")
    q.set_defaults(name="run")

    q = sub.add_parser("doctor", help="check every configured part and say how to fix problems")
    config_arg(q)
    q.set_defaults(name="doctor")

    q = sub.add_parser("init", help="write a starter config")
    q.add_argument("path", nargs="?", default="streamer.toml")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.add_argument("--gpu", action="store_true",
                   help="set the [model] keys for this machine's CUDA card (keeps the rest of an existing file)")  # fmt: skip
    q.set_defaults(func=init_command)

    bench = sub.add_parser("bench", help="measure a workload (see docs/benchmarks.md)").add_subparsers(
        dest="bench", required=True
    )
    q = bench.add_parser("pipeline", help="W5: network source -> passthrough -> network sink, 1280x720 at 30 fps")
    q.add_argument("--seconds", type=DURATION, default=20.0)
    q.add_argument("--width", type=COUNT, default=1280)
    q.add_argument("--height", type=COUNT, default=720)
    q.add_argument("--fps", type=FPS, default=30.0)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(name="bench pipeline")
    q = bench.add_parser("model", help="W1-W4: eager vs torch.compile vs the fast path")
    q.add_argument("workload", nargs="?", default="W4", help="W1, W2, W3, W4 (or 'custom')")
    q.add_argument("--preset")
    q.add_argument("--width", type=COUNT)
    q.add_argument("--height", type=COUNT)
    q.add_argument("--steps", type=COUNT)
    q.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16", "fp8"],
                   help="model dtype (default: the workload's; W4 = auto, what the daemon picks)")  # fmt: skip
    q.add_argument("--variants", default="eager,compile,fast", help="comma list of eager, compile, fast")
    q.add_argument("--iters", type=COUNT, default=50)
    q.add_argument("--device", default="auto")
    q.add_argument("--checkpoint", help="DiT weights (path or 'random'); default: what the loader picks for the preset")
    q.add_argument("--vae", help="autoencoder weights (path or 'random'); default: what the loader picks")
    q.add_argument("--gpus", type=_gpus, default=1,
                   help="N > 1 or 'all': the pipelined engine over N stage processes (docs/multi-gpu.md)")  # fmt: skip
    q.add_argument("--mode", choices=["sequential", "stream-batch"], default="sequential",
                   help="with --gpus: the pipeline's mode; on one GPU, stream-batch runs each variant beside sequential")  # fmt: skip
    q.add_argument("--fps", type=FPS, default=30.0, help="with --gpus: input rate of the latency run")
    q.add_argument("--json", action="store_true")
    q.set_defaults(name="bench model")

    model = sub.add_parser("model", help="model tools").add_subparsers(dest="model", required=True)
    q = model.add_parser("inspect", help="detect a checkpoint's layout, preset, dtype and problems")
    q.add_argument("path")
    q.add_argument("--lora", help="a LoRA file to check against the checkpoint")
    q.add_argument("--key", choices=get_args(CheckpointKey), default="auto",
                   help="which entry of a training pickle to read (model.checkpoint_key); auto: what its upstream loads")
    q.set_defaults(name="model inspect")

    models = sub.add_parser("models", help="download weights from the Hugging Face Hub").add_subparsers(
        dest="models", required=True
    )
    q = models.add_parser("pull", help="fetch a catalogue entry, verify it and point the config at it")
    q.add_argument("entry", metavar="NAME", help="catalogue entry (see `streamer models list`)")
    q.add_argument("--dir", help="download into DIR/<repo name>/ (default: the Hugging Face cache)")
    q.add_argument("--config", "-c", metavar="FILE", default="streamer.toml",
                   help="config whose [model] keys are set (created from the example if missing)")  # fmt: skip
    q.add_argument("--no-config", action="store_true", help="only print the settings")
    q.set_defaults(name="models pull")
    q = models.add_parser("list", help="the catalogue: size, what is on disk, what each entry is good for")
    q.add_argument("--dir", help="look in DIR/<repo name>/ (default: the Hugging Face cache)")
    q.add_argument("--hub", action="store_true", help="exact sizes from the Hub (default: stored, offline)")
    q.set_defaults(name="models list")

    q = sub.add_parser("check-prompt", help="show the moderation verdict for a text (exit 0 allowed, 1 rejected)")
    q.add_argument("text")
    config_arg(q)
    q.set_defaults(name="check-prompt")

    obs = sub.add_parser("obs", help="OBS Studio tools").add_subparsers(dest="obs", required=True)
    q = obs.add_parser("setup", help="create or repair the AI input, prompt text and overlay in OBS")
    config_arg(q)
    q.set_defaults(name="obs setup")

    twitch = sub.add_parser("twitch", help="Twitch tools").add_subparsers(dest="twitch", required=True)
    q = twitch.add_parser("login", help="log the bot or broadcaster in (device-code flow)")
    config_arg(q)
    q.add_argument("--as", dest="role", choices=["bot", "broadcaster"], default="bot")
    q.set_defaults(name="twitch login")

    q = sub.add_parser("train", help="train or fine-tune a model (see docs/training.md; torchrun for several GPUs)",
                       epilog="streamer train evaluate --help: score a model on held-out clips; "
                              "streamer train widen-input --help: make a DiT input-conditioned; "
                              "streamer train widen-luma --help: give it the input's luma too; "
                              "streamer train widen-ffn --help: give a DiT more FFN channels; "
                              "streamer train refiner --help: fit a pixel refiner to a model's output")  # fmt: skip
    q.add_argument("--config", "-c", metavar="FILE", required=True, help="training TOML ([train] table)")
    q.add_argument("--steps", type=COUNT, help="override train.steps")
    q.add_argument("--out-dir", help="override train.out_dir")
    q.add_argument("--stop-after", type=COUNT, help="stop after N more steps (checkpointed; rerun to resume)")
    q.add_argument("--max-minutes", type=DURATION, help="stop after this long (checkpointed; rerun to resume)")
    q.set_defaults(name="train")

    q = sub.add_parser("prune", help="remove the least useful heads/FFN channels; writes a smaller preset")
    q.add_argument("checkpoint", help="DiT checkpoint (file or folder) to prune")
    q.add_argument("--out", required=True, help="folder for the pruned preset (config.json + model.safetensors)")
    q.add_argument("--heads", type=DEFAULT_OR_COUNT, default=0, help="heads to keep per layer (default 3/4)")
    q.add_argument("--ffn", type=DEFAULT_OR_COUNT, default=0, help="FFN width to keep, a multiple of 64 (default 3/4)")
    q.add_argument("--config", help="training TOML whose data/resolution/autoencoder calibrate (default built-in)")
    q.add_argument("--calib-batches", type=COUNT, default=4, help="calibration batches for the importance scores")
    q.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    q.set_defaults(name="prune")

    q = sub.add_parser("soak", help="run the real daemon for a long time with faults injected, and measure it")
    q.add_argument("--minutes", type=DURATION, default=2.0, help="how long to inject faults (default 2)")
    q.add_argument("--fault-every", type=number(float, 5.0), default=12.0, metavar="SECONDS",
                   help="seconds between faults (default 12)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for the store, recordings, logs and the report")
    q.add_argument("--source", choices=["network", "pattern"], default="network",
                   help="network: fed by a sender process the soak kills and restarts (default)")
    q.add_argument("--faults", help="comma list of faults to rotate (default: all)")
    q.add_argument("--no-obs", action="store_true", help="do not start a headless OBS even when installed")
    q.add_argument("--width", type=COUNT, default=128)
    q.add_argument("--height", type=COUNT, default=128)
    q.add_argument("--fps", type=FPS, default=10.0)
    q.add_argument("--poll-seconds", type=COUNT, default=30, help="length of each chat poll (15-1800)")
    q.set_defaults(name="soak")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["train", "evaluate"]:  # its own parser (streamer.train.evaluate): its options are not train's
        from streamer.train.evaluate import main as evaluate_main

        return evaluate_main(argv[2:], prog="streamer train evaluate")
    if argv[:1] == ["train"] and argv[1:2] in (["widen-input"], ["widen-luma"], ["widen-ffn"]):  # their own parser too (widen.py)
        from streamer.train.widen import main as widen_main

        return widen_main(argv[2:], prog=f"streamer train {argv[1]}", what=argv[1].removeprefix("widen-"))
    if argv[:2] == ["train", "refiner"]:  # its own parser too (refine.py)
        from streamer.train.refine import main as refine_main

        return refine_main(argv[2:], prog="streamer train refiner")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if getattr(args, "config", None) is UNSET:
        args.config = default_config()
    func = getattr(args, "func", None) or _handler(args.name)
    try:
        return int(func(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


UNSET = object()  # --config not given (None would be ambiguous with an explicit default)


def default_config() -> str | None:
    """./streamer.toml when it exists (what `streamer models pull` and `init` write), else None: the embedded
    defaults. So `streamer models pull self-forcing` then `streamer run` needs no --config."""
    if Path(DEFAULT_CONFIG).is_file():
        logging.getLogger("streamer").info("config: ./%s (pass --config to use another)", DEFAULT_CONFIG)
        return DEFAULT_CONFIG
    return None


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> int:
    """The process entry point (the `streamer` command, `python -m streamer`): `main`, then the exit.

    A model load still running at the end (a daemon stopped while it loads) would have the interpreter's
    teardown free torch under the loader thread, which aborts the process ("terminate called without an
    active exception", exit 134). Everything is closed and flushed by then (sinks, store, logs), so the
    process leaves without that teardown. Only here: `main` itself returns to in-process callers.
    """
    code = main()
    from streamer.pipeline import loader_running

    if loader_running():
        logging.getLogger(__name__).info("exiting while a model load is still running (it is abandoned)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
