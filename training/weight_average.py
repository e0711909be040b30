"""Stochastic weight averaging: the mean of a model's weights over the last epochs.

At a constant learning rate, fine-tuning keeps moving around a good region instead of
settling in it, and the held-out accuracy of successive epochs jumps by a point or more.
The mean of the weights after each of those epochs (Izmailov et al. 2018, "Averaging
Weights Leads to Wider Optima and Better Generalization") is one model, served at no
extra cost, that tends to sit nearer the region's centre. BatchNorm statistics are frozen
while fine-tuning here, so the averaged weights need no re-estimated statistics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np


class WeightAverage:
    """The running mean of ``variables`` (keras variables), taken after chosen epochs."""

    def __init__(self, variables: Sequence[Any]) -> None:
        self.variables = list(variables)
        self.count = 0
        self.mean: list[np.ndarray] = []

    def add(self) -> None:
        """Fold the variables' current values into the mean."""
        self.count += 1
        current = [np.asarray(v.numpy(), dtype=np.float64) for v in self.variables]
        mean = self.mean or current
        self.mean = [m + (c - m) / self.count for m, c in zip(mean, current, strict=True)]

    def assign(self) -> None:
        """Replace the variables' values with the mean (nothing if nothing was added)."""
        for variable, mean in zip(self.variables, self.mean, strict=False):
            variable.assign(mean.astype(variable.dtype))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The mean in place inside the block; the trained values restored after it."""
        if not self.mean:  # nothing averaged yet: the trained values are the model
            yield
            return
        trained = [v.numpy() for v in self.variables]
        self.assign()
        try:
            yield
        finally:
            for variable, value in zip(self.variables, trained, strict=True):
                variable.assign(value)
