"""Where tensors live (``--device auto|cpu|cuda``) and how many CPU threads torch uses."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: a GPU when torch sees one, else the CPU; ``cuda`` without one is an error."""
    if name not in DEVICES:
        raise ValueError(f"Expected device one of {', '.join(DEVICES)}. Received: {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "Expected a CUDA GPU for --device cuda. Received: none visible to torch "
            f"{torch.__version__} (a CPU build has none); use --device auto or cpu"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads (default: ``TORCH_THREADS`` or every core torch sees)."""
    count = threads or int(os.environ.get("TORCH_THREADS", "0")) or None
    if count:
        torch.set_num_threads(count)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; returns a generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def small_model_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread while training a head on cached features, then back.

    Its matrices are tiny: on 2 busy cores an epoch took 0.48 CPU-s on one thread and
    2.6 on two, which spend their time waiting for each other.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
