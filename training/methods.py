"""The recipes: how the head (and, for some, the top of the base) is trained, as data.

A :class:`Method` is everything that decides the model's weights given cached inputs:
settings of the dense top, its regularisation, the epochs tried, how the epoch is chosen,
and whether the exit flow of the base is fine-tuned afterwards. Every command trains one
(``cv`` per fold, ``cv --ship`` on every photo, ``train`` on the train split);
:func:`train_head` trains the head on given rows and returns the held-out logits after
every epoch.

Only the shipped recipe and its references live here. The methods cross-validation
rejected (views, mixup, test-time flip, other heads) are rows of
``docs/results/cv-2026-12-02.md``, reproducible at commit 161120f.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from training.folds import stratified_folds

STEPS_PER_EXECUTION = 32
FEATURES = "orig"  # the key of the pooled base features among the cached inputs


@dataclass(frozen=True)
class Method:
    """One recipe (see the module docstring); its defaults are today's `make run` head."""

    name: str
    description: str
    learning_rate: float = 1e-3
    size_inner: int = 100
    droprate: float = 0.2
    l2: float = 0.0
    label_smoothing: float = 0.0
    epochs: int = 20  # the most epochs tried; a holdout or cross-validation picks how many
    batch_size: int = 32
    # > 0: hold out this share of the training rows and keep the epoch with the best
    # accuracy on it (as `train` does with the validation split).
    inner_holdout: float = 0.0
    # "block13": after the head, fine-tune the base from that block up on cached
    # activations; the scored epochs are then the fine-tuning ones.
    fine_tune: str = ""
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-4
    # > 0: predict with the mean of the weights after each fine-tuning epoch from this one
    # on (stochastic weight averaging, `training.weight_average`).
    fine_tune_average_from: int = 0

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every cached input this method reads (a fine-tuning cut's activations included)."""
        return (FEATURES, self.activations_view) if self.fine_tune else (FEATURES,)

    @property
    def activations_view(self) -> str:
        """The key of the activations entering ``fine_tune`` among the cached inputs."""
        return f"{self.fine_tune}-input"

    @property
    def scored_epochs(self) -> int:
        """How many epochs have held-out logits (the fine-tuning ones, if it fine-tunes)."""
        return self.fine_tune_epochs if self.fine_tune else self.epochs

    def to_dict(self) -> dict:
        """The settings as JSON (a head-only method's without the fine-tuning ones)."""
        record = asdict(self)
        if not self.fine_tune:
            for key in ("fine_tune", "fine_tune_epochs", "fine_tune_learning_rate"):
                del record[key]
        if not self.fine_tune_average_from:
            del record["fine_tune_average_from"]
        return record


TODAY = Method(
    "today",
    "today's `make run` recipe: lr 1e-3, Dense(100)+Dropout(0.2), 20 epochs, best epoch by "
    "accuracy on a held-out 10% (the validation split's share)",
    inner_holdout=0.1,
)
FT_BLOCK13 = Method(
    "ft-block13",
    "today's head, then the exit flow (block13 and up) fine-tuned: 5 epochs at lr "
    "1e-4, BatchNorm frozen, best epoch on the held-out 10%",
    inner_holdout=0.1,
    fine_tune="block13",
)
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        TODAY,
        FT_BLOCK13,
        Method(
            "ft-block13-swa",
            "ft-block13 predicting with the mean of its weights after each fine-tuning epoch "
            "from the 2nd on (stochastic weight averaging)",
            inner_holdout=0.1,
            fine_tune="block13",
            fine_tune_average_from=2,
        ),
    )
}
# Fine-tuning runs the top blocks forward and backward for every photo, every epoch
# (~12 min per fold on 2 CPU cores): it runs only when named.
HEAD_ONLY = tuple(name for name, method in METHODS.items() if not method.fine_tune)


# The settings a command line may change, named after Method's fields (`train --epochs`);
# `train`'s inner holdout is the validation split.
TUNABLE = tuple(
    f.name for f in fields(Method) if f.type in ("int", "float") and f.name != "inner_holdout"
)


def override(base: Method, **given: Any) -> Method:
    """``base`` with some :data:`TUNABLE` settings changed, each checked."""
    from training.config import check_head

    for name in ("epochs", "batch_size", "fine_tune_epochs"):
        if given.get(name, 1) < 1:
            raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: {given[name]}")
    for name in ("learning_rate", "fine_tune_learning_rate"):
        if given.get(name, 1) <= 0:
            raise ValueError(f"Expected --{name.replace('_', '-')} > 0. Received: {given[name]}")
    changed = replace(base, **given)
    check_head(changed.size_inner, changed.droprate, 2)
    return changed


def method(name: str) -> Method:
    """The registered method called ``name``; the list of them if there is none."""
    if name.strip() not in METHODS:
        raise ValueError(f"Expected methods among {', '.join(METHODS)}. Received: {name.strip()!r}")
    return METHODS[name.strip()]


@dataclass(frozen=True)
class HeadRun:
    """What training one head leaves: per-epoch logits on the rows it was asked about."""

    logits: np.ndarray  # (epochs, rows, classes) on the held-out rows
    inner_accuracy: np.ndarray | None  # (epochs,) on the inner holdout, if there is one
    top: Any  # the trained keras head (last epoch, or the best inner one if kept)
    inner_rows: np.ndarray | None = None  # the inner holdout, if there is one
    best_weights: list | None = None  # the head's weights at its first best inner epoch
    network: Any = None  # the whole network (base + head), when its base was fine-tuned


def train_head(
    method: Method,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    train_rows: np.ndarray,
    held_out_rows: np.ndarray,
    n_classes: int,
    seed: int,
    inner_rows: np.ndarray | None = None,
) -> HeadRun:
    """Train ``method`` on ``train_rows``; logits of ``held_out_rows`` after each epoch.

    The inner holdout that picks the epoch is ``inner_rows`` when given (``train``: the
    validation split), else ``method.inner_holdout`` of the training rows, if any.
    """
    import keras

    from training.model import make_top

    rows, inner = train_rows, inner_rows
    if inner is None and method.inner_holdout > 0:
        rows, inner = _inner_split(train_rows, targets, method.inner_holdout, seed)
    x = inputs[FEATURES]
    keras.utils.set_random_seed(seed)
    top = make_top(method.size_inner, method.droprate, n_classes, l2=method.l2)
    top.compile(
        optimizer=keras.optimizers.Adam(learning_rate=method.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=method.label_smoothing
        ),
        # Several steps per call: a tiny head otherwise spends a third of its time in
        # per-step overhead.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    onehot = np.eye(n_classes, dtype=np.float32)[targets[rows]]
    logits, inner_accuracy, best_weights = [], [], None
    for _ in range(method.epochs):
        top.fit(x[rows], onehot, batch_size=method.batch_size, epochs=1, shuffle=True, verbose=0)
        logits.append(predict(top, inputs, held_out_rows))
        if inner is not None:
            guess = predict(top, inputs, inner).argmax(axis=1)
            inner_accuracy.append(float(np.mean(guess == targets[inner])))
            if inner_accuracy[-1] > max(inner_accuracy[:-1], default=-1.0):
                best_weights = top.get_weights()
    return HeadRun(
        np.stack(logits),
        np.array(inner_accuracy) if inner is not None else None,
        top,
        inner,
        best_weights,
    )


def predict(top, inputs: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The head's logits (float64) for ``rows`` of the cached features."""
    return np.asarray(top(inputs[FEATURES][rows], training=False), dtype=np.float64)


def _inner_split(
    rows: np.ndarray, targets: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, inner holdout rows): a stratified ``share`` of ``rows`` held out."""
    smallest = int(np.bincount(targets[rows])[np.unique(targets[rows])].min())
    k = max(2, min(round(1 / share), smallest))
    fold = stratified_folds(targets[rows], k, seed + 7919)
    return rows[fold != 0], rows[fold == 0]
