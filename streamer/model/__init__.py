"""The causal video diffusion model: DiT (dit.py), rolling KV cache (cache.py), checkpoint loading
(checkpoints.py), autoencoder, text encoder, sampler and the streaming engine."""
