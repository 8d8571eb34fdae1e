"""Kernel tests: run Triton in its CPU interpreter when there is no CUDA device.

TRITON_INTERPRET must be set before triton is first imported (and before any kernel is decorated),
which is why this lives in the conftest: pytest imports it before the test modules. On a CUDA machine
the same tiny tests run compiled on the GPU, and the `gpu`-marked tests add the real sizes.
"""

from __future__ import annotations

import os
import sys

if "triton" in sys.modules and not os.environ.get("TRITON_INTERPRET"):
    raise RuntimeError("triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET")

import torch  # noqa: E402  (importing torch does not import triton)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
