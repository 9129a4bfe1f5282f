"""VQRAE: a VQ representation autoencoder (arXiv 2511.23386), offline-first."""
