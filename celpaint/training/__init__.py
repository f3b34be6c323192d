"""Training: configuration, data, losses, the GAN step, the run folder, distribution, the loop."""
