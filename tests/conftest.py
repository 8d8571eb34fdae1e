"""Loaded by pytest before any test module.

Triton picks its interpreter (TRITON_INTERPRET=1, set by kernels/backend.py on machines without CUDA)
when `triton.language` is first imported: its own standard-library functions are made then.
Importing torch._dynamo (torch.compile) imports triton, so a test module that compiles something
must not be the first to do so, or every later kernel test in the process fails with "Cannot call
@triton.jit'd outside of the scope of a kernel". Importing the kernels' backend here chooses first.
"""

import streamer_kernels.backend  # noqa: F401
