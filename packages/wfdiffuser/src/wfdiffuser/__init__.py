"""Wavelet Fourier Diffuser (arXiv 2509.19305) for offline RL, with Decision Diffuser and Diffuser-style baselines."""
