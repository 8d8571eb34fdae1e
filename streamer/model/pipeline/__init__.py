"""Pipeline-parallel streaming: the DiT's layers split over `model.gpus` processes, one per GPU (issue 16).

The daemon's engine thread keeps the same `Transform` interface (engine.py: `PipelinedTransform`); behind
it, stage processes (stage.py) joined by torch.distributed (NCCL on GPUs, gloo on the CPU) each hold a
range of layers with their KV cache, pass activations on with send/recv (wire.py), and the last one
hands frames back. group.py starts and supervises them (timeouts everywhere, restart with backoff);
balance.py places the stage boundaries from measured per-layer times. docs/multi-gpu.md explains it.
"""
