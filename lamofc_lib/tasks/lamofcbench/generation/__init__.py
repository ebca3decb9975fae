"""LaMoFCBench's controllable generation scenario (row 16): Stable Diffusion 3.5 Large with the canny ControlNet,
coding its conditions or its final latent (sd35_canny.py)."""
