"""`python -m shared.shapes [--out PATH] [--size N] [--per-tag K] [--seed S]`: save the captioned example grid."""

from shared.shapes.grid import main

main()
