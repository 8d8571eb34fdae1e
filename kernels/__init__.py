"""Triton kernels for the GPU fast path: one op per file, each with `<op>_ref()` in plain torch beside it.

Every launcher also runs under Triton's interpreter on CPU tensors, which is how CI checks them; speed
only matters on a CUDA GPU. See streamer/model/fast.py for where they are used.
"""

import os

import torch

# Without CUDA a compiled Triton kernel cannot run at all, so CPU-only machines (CI) get the
# interpreter. It must be chosen before any kernel module is imported: @triton.jit reads it when it
# decorates, which is why it lives here in the package's __init__.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
