"""Kernel tests: run Triton in its CPU interpreter when there is no CUDA device.

TRITON_INTERPRET must be set before any kernel is decorated (@triton.jit reads it then), so it is
set here, before pytest imports the test modules (kernels/__init__.py does the same for any other
importer). On a CUDA machine the same tiny tests run compiled on the GPU, and the `gpu`-marked tests
add the real sizes.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
