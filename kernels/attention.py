"""Attention over the KV cache: pick the fastest correct backend on this card by measuring.

The chunk's queries attend to every cached key plus their own (block-causal across chunks, full
within one), so no mask is needed: q [B, Sq, H, D], k/v [B, Sk, H, D] -> [B, Sq, H, D].

Candidates, in preference order: FlashAttention-3 (`flash_attn_interface`, if importable), our
Triton stream-K kernel (kernels/flash_attention.py, its `default_config()`), then PyTorch SDPA pinned to
its cuDNN, flash and memory-efficient backends. (Two ways to fill the second wave of W1's 156 q-tiles on
132 SMs with cuDNN measured slower on an H100 and were dropped: its keys split into 2-5 ranges, 0.27-0.33
ms vs 0.255; and cuDNN on the 1408 query rows that fill one wave with the stream-K kernel on the other
152, 0.205-0.22 ms in the fast path's own timing against the stream-K kernel's 0.195, 2026-12-07.
docs/benchmarks.md.) Measured on an H100 for W1's
shapes, the backend alone changes attention time 1.7x (docs/benchmarks.md), and which one wins
depends on shape and library versions, so `AttentionPicker` times each candidate once per shape,
rejects any that disagrees with the fp32 reference, and remembers the winner. Picking happens
during warm-up; inside CUDA graph capture only remembered picks are used.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)
AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _sdpa(backend: SDPBackend | None) -> AttnFn:
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([backend]) if backend is not None else nullcontext():
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
        return out.transpose(1, 2)

    return run


def _fa3() -> AttnFn | None:
    try:
        mod = importlib.import_module("flash_attn_interface")
    except Exception:  # not installed, or built for another torch: either way not usable
        return None

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = mod.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out

    return run


def _triton_flash() -> AttnFn:
    from streamer_kernels.flash_attention import flash_attention  # imported here: it needs Triton

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        try:
            return flash_attention(q, k, v)
        except Exception as e:  # an unsupported shape, or a compile failure on this card: not a candidate
            raise RuntimeError(f"triton flash attention: {e}") from e

    return run


def available_backends(device: torch.device) -> dict[str, AttnFn]:
    """Backends that can run on `device`, best first by expectation (the picker measures)."""
    found: dict[str, AttnFn] = {}
    if device.type == "cuda":
        fa3 = _fa3()
        if fa3 is not None:
            found["fa3"] = fa3
        found["triton_flash"] = _triton_flash()
        found["cudnn"] = _sdpa(SDPBackend.CUDNN_ATTENTION)
        found["flash"] = _sdpa(SDPBackend.FLASH_ATTENTION)
        found["efficient"] = _sdpa(SDPBackend.EFFICIENT_ATTENTION)
    found["sdpa"] = _sdpa(None)  # PyTorch's own choice: the fallback everywhere
    return found


def attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Plain softmax attention in fp32, [B, S, H, D] layout; returned in q's dtype unless `out_dtype`."""
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ vf).transpose(1, 2).to(out_dtype or q.dtype)


def _time_ms(fn: AttnFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, iters: int) -> float:
    for _ in range(2):
        fn(q, k, v)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn(q, k, v)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


class AttentionPicker:
    """Callable attention that measures the candidates once per (shape, dtype, device) and keeps the fastest."""

    def __init__(self, iters: int = 10, only: str | None = None) -> None:
        self.iters = iters
        self.only = only  # force one backend by name (tests, benchmarks)
        self.picks: dict[tuple, str] = {}
        self.timings: dict[tuple, dict[str, float]] = {}
        self._backends: dict[str, dict[str, AttnFn]] = {}
        # per shape: whether the prompt kernel (`prompt`) and its fold (`prompt_projected`) passed their checks
        self.prompt_ok: dict[tuple, bool] = {}

    def _candidates(self, device: torch.device) -> dict[str, AttnFn]:
        key = str(device)
        if key not in self._backends:
            self._backends[key] = available_backends(device)
        return self._backends[key]

    def pick(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
        """The backend name used for these shapes; measures on first sight (never while capturing)."""
        key = (tuple(q.shape), tuple(k.shape), q.dtype, str(q.device))
        if key in self.picks:
            return self.picks[key]
        cands = self._candidates(q.device)
        if self.only is not None:
            if self.only not in cands:
                raise ValueError(f"attention backend {self.only!r} not available on {q.device}; have {list(cands)}")
            self.picks[key] = self.only
            return self.only
        if q.device.type != "cuda":
            self.picks[key] = "sdpa"
            return "sdpa"
        if torch.cuda.is_current_stream_capturing():
            # no timing inside a capture: the warm-up should have picked; take PyTorch's own choice
            log.warning("attention shape %s first seen during graph capture; using PyTorch's default SDPA", key)
            return "sdpa"
        ref = attention_ref(q, k, v).float()
        times: dict[str, float] = {}
        for name, fn in cands.items():
            try:
                err = _relative_error(fn(q, k, v), ref)
            except RuntimeError as e:  # e.g. cuDNN refusing a shape: not a candidate for it
                log.debug("attention backend %s unavailable for %s: %s", name, key, e)
                continue
            if not err < _tolerance(q.dtype):
                log.warning("attention backend %s rejected for %s: relative error %.3g", name, key, err)
                continue
            times[name] = _time_ms(fn, q, k, v, self.iters)
        if not times:
            raise RuntimeError(f"no attention backend produced a correct result for {key}")
        best = min(times, key=times.__getitem__)
        self.picks[key], self.timings[key] = best, times
        log.info("attention %s: %s (ms: %s)", key, best, {n: round(t, 3) for n, t in times.items()})
        return best

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._candidates(q.device)[self.pick(q, k, v)](q, k, v)

    def prompt(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Attention to a prompt's K/V whose rows from starts[b] on repeat one row: the prompt kernel
        (kernels/prompt_attention.py), which reads each run once. Checked once per shape against the
        reference over every key, as the backends are; where it fails (or first runs inside a graph
        capture), the picked backend over every key instead: the same function, slower. A picker forced
        to one backend (`only`) uses that one."""
        from streamer_kernels.prompt_attention import prompt_attention  # imported here: it imports this module

        key = (tuple(q.shape), tuple(k.shape), q.dtype, str(q.device))
        if self.only is None and self._checked(key, q, lambda: _matches_reference(
            "prompt attention", lambda: prompt_attention(q, k, v, starts), lambda: attention_ref(q, k, v).float(),
            q.dtype, key,
        )):  # fmt: skip
            return prompt_attention(q, k, v, starts)
        return self(q, k, v)

    def prompt_projected(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        starts: torch.Tensor,
        u: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """`prompt`, then the o projection (weight [N, H*D], bias): [B, S, N]. A batch row whose distinct
        keys fit in u [B, H, F, N] (the first values projected: CrossAttnKV.u) gets the attention's
        weights times u (kernels/prompt_projection.py), the others the output times the weight. Checked
        once per shape both ways (as the prompt is, and with every key taken as distinct) against the
        reference's projection; where that fails, `prompt` and a matmul."""
        from streamer_kernels.prompt_attention import prompt_attention
        from streamer_kernels.prompt_projection import prompt_projection

        B, S, H, D = q.shape

        def run(starts: torch.Tensor) -> torch.Tensor:
            probs = q.new_empty(B, S, H, u.shape[2])
            o = prompt_attention(q, k, v, starts, probs=probs)
            return prompt_projection(probs, u, o.view(B, S, H * D), weight, bias, starts)

        def check() -> bool:
            def ref() -> torch.Tensor:
                return F.linear(attention_ref(q, k, v).float().flatten(2), weight.float(), bias.float())

            every_key = torch.full_like(starts, k.shape[1] - 1)  # no run of copies: nothing folds
            return _matches_reference("the folded prompt projection", lambda: run(starts), ref, q.dtype, key) and (
                _matches_reference("the unfolded prompt projection", lambda: run(every_key), ref, q.dtype, key)
            )

        key = ("projected", tuple(q.shape), tuple(k.shape), tuple(u.shape), q.dtype, str(q.device))
        if self.only is None and self._checked(key, q, check):
            return run(starts)
        return F.linear(self.prompt(q, k, v, starts).flatten(2), weight, bias)

    def _checked(self, key: tuple, q: torch.Tensor, check: Callable[[], bool]) -> bool:
        """Whether a kernel passed its check for `key`; checked on first sight (never while capturing:
        not yet checked then means not used)."""
        ok = self.prompt_ok.get(key)
        if ok is None and not (q.is_cuda and torch.cuda.is_current_stream_capturing()):
            ok = self.prompt_ok[key] = check()
        return bool(ok)


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def _tolerance(dtype: torch.dtype) -> float:
    """The relative error a candidate may have against the fp32 reference to be used."""
    return 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-3


def _matches_reference(what: str, run: Callable[[], torch.Tensor], ref: Callable[[], torch.Tensor],
                       dtype: torch.dtype, key: tuple) -> bool:  # fmt: skip
    """The picker's rule for a backend, applied to a kernel the fast path may use instead (its speed is
    benchmarked, not timed here: `bench attention --shapes "W1 cross"`)."""
    try:
        err = _relative_error(run(), ref())
    except Exception as e:  # a compile or launch failure on this card, or inputs it does not take
        log.warning("%s unavailable for %s (%s); attending to every key", what, key, e)
        return False
    if not err < _tolerance(dtype):
        log.warning("%s rejected for %s: relative error %.3g; attending to every key", what, key, err)
        return False
    log.info("%s for %s: relative error %.2g against every key", what, key, err)
    return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """One-off attention through a named backend (see `available_backends`); [B, S, H, D] layout."""
    fns = available_backends(q.device)
    if backend not in fns:
        raise ValueError(f"attention backend {backend!r} not available on {q.device}; have {list(fns)}")
    return fns[backend](q, k, v)
