"""Triton for the fused kernels: compiled on a CUDA GPU, Triton's interpreter everywhere else.

The folder kernels/ holds the Triton kernels of the GPU fast path, one op per file, each with
`<op>_ref()` in plain torch beside it; it installs as `streamer_kernels` (see pyproject.toml) and is
used by streamer/model/fast/. Every launcher also runs under the interpreter on CPU tensors, which is
how CI checks them; speed only matters on a CUDA GPU.

kernels/ deliberately has no `__init__.py`: a regular package named `kernels` at the checkout's root
would shadow Hugging Face's `kernels` (a transformers dependency) for any Python started there
(`python -m pytest`, `python -m streamer...`), and transformers would import ours. As a namespace
portion it loses to any installed regular package of that name.

Every kernel module imports `triton` and `tl` from here so the choice below comes first.
"""

import os

import torch

# Without CUDA a compiled Triton kernel cannot run at all, so CPU-only machines (CI) get the
# interpreter. It must be chosen before triton.language is first imported (its standard-library
# functions are made then) and before any @triton.jit decorates (it reads the setting then).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Whether the kernels run in Triton's interpreter (chosen above, or set by the caller): launchers pick
# their fp32 / emulated paths by it. Read once, here, for every module.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

__all__ = ["INTERPRET", "tl", "triton"]
