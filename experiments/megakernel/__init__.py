"""A persistent one-block megakernel, measured slower than the fast path and not used: see README.md."""
