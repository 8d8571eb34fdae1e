"""Triton kernels for the GPU fast path: one op per file, each with `<op>_ref()` in plain torch beside it.

Every launcher also runs under Triton's interpreter (`TRITON_INTERPRET=1`) on CPU tensors, which is how
CI checks them; speed only matters on a CUDA GPU. See streamer/model/fast.py for where they are used.
"""
