"""Diffusion models for raycluster: diffusers UNets + schedulers built from plain config dicts,
and the denoising objective (pure torch; Ray wiring lives in `raycluster.train`)."""
