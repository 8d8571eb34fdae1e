"""Training the streamer models: diffusion forcing, history augmentation, shortcut distillation, pruning."""
