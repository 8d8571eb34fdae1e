"""Weight files users bring: readers (safetensors, weights_only pickles, containers), the DiT checkpoint
loader with its layout detection, and LoRA merging. Nothing here builds an engine."""
