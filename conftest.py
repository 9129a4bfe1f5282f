"""Workspace-wide pytest setup: one torch thread, offline hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# Import the real `shared` package before collection. With --import-mode=importlib pytest names
# shared/tests/test_x.py "shared.tests.test_x" and would otherwise create a namespace module
# `shared` for the folder shared/, shadowing the installed package.
import shared  # noqa: E402,F401
