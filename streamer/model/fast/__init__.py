"""The GPU fast path: the same chunk step (streamer/model/step.py) and the same DiT forward, run with
fused Triton kernels (ops.py), static autoencoder buffers (vae.py) and a lean cache commit (cache.py),
captured as one CUDA graph per chunk (path.py). A way of running the model, not a second model.
Imported only where a GPU is used (builder.py, benches): it imports Triton."""
