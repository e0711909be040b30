"""The network: a frozen ImageNet Xception base (pooled by Keras) and a small dense top.

The top's layers are built once and shared by two functional models: ``top`` (pooled
2048-d features in, logits out: what training fits on cached features) and the full model
(image in, logits out: what is checkpointed and converted). Training one trains the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from lambda_function.model_metadata import OUTPUT
from training.config import check_head

MIN_IMAGE_SIZE = 71
N_FEATURES = 2048  # Xception's pooled output width


@dataclass(frozen=True)
class Network:
    """The full model and the top it shares layers with."""

    model: keras.Model  # (N, size, size, 3) scaled pixels -> (N, n_classes) logits
    top: keras.Model  # (N, 2048) pooled features -> the same logits
    base: keras.Model  # Xception without its top, average-pooled, frozen


def make_network(
    image_size: int,
    size_inner: int,
    droprate: float,
    weights: str | Path | None = "imagenet",
    n_classes: int = 10,
    *,
    l2: float = 0.0,
    base: keras.Model | None = None,
    name: str = "xception_v1",
) -> Network:
    """Build (uncompiled) the full model and the feature-level top sharing its layers.

    ``size_inner`` is the inner ``Dense(relu)`` width (0: none), ``droprate`` the dropout
    after it (a :class:`training.methods.Method` holds both).

    ``base`` reuses an already built (frozen) base instead of building one from ``weights``.
    """
    base = base if base is not None else make_base(image_size, weights)
    head = _head_layers(size_inner, droprate, n_classes, l2)
    features = keras.Input((N_FEATURES,), name="features")
    top = keras.Model(features, _apply(head, features), name="top")
    inputs = keras.Input((image_size, image_size, 3), name="input")
    model = keras.Model(inputs, _apply(head, base(inputs, training=False)), name=name)
    return Network(model=model, top=top, base=base)


def make_top(size_inner: int, droprate: float, n_classes: int, *, l2: float = 0.0) -> keras.Model:
    """The dense top alone (pooled features in, logits out), layer for layer the full model's.

    Its weights fit ``make_network(...).top`` with the same settings (``set_weights``).
    """
    features = keras.Input((N_FEATURES,), name="features")
    head = _head_layers(size_inner, droprate, n_classes, l2)
    return keras.Model(features, _apply(head, features), name="top")


def make_base(image_size: int, weights: str | Path | None = "imagenet") -> keras.Model:
    """Xception without its top, global-average-pooled (2048-d out), frozen.

    Also the feature extractor: scaled pixels in, exactly what the top of the full model sees.
    """
    _check_image_size(image_size)
    base = keras.applications.Xception(
        weights=_check_weights(weights),
        include_top=False,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )
    base.trainable = False
    return base


def compile_model(
    model: keras.Model, learning_rate: float = 1e-3, *, label_smoothing: float = 0.0
) -> None:
    """Adam, categorical cross-entropy on logits, accuracy."""
    if not learning_rate > 0:
        raise ValueError(f"Expected a learning rate > 0. Received: learning_rate={learning_rate}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        ),
        metrics=["accuracy"],
    )


def _head_layers(size_inner: int, droprate: float, n_classes: int, l2: float) -> list:
    check_head(size_inner, droprate, n_classes)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    head = []
    if size_inner:
        head.append(
            layers.Dense(
                size_inner, activation="relu", kernel_regularizer=regularizer, name="inner"
            )
        )
        head.append(layers.Dropout(droprate, name="dropout"))
    # float32 logits even under a mixed-precision policy (numerically safe softmax/loss).
    head.append(
        layers.Dense(n_classes, kernel_regularizer=regularizer, dtype="float32", name=OUTPUT)
    )
    return head


def _apply(head: list, x):
    for layer in head:
        x = layer(x)
    return x


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"Expected image size >= {MIN_IMAGE_SIZE} (Xception's smallest input). "
            f"Received: image_size={image_size!r}"
        )


def _check_weights(weights: str | Path | None) -> str | None:
    if weights is None or weights == "imagenet":
        return weights
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            "Expected weights='imagenet', None or the path of an Xception .weights.h5 file "
            f"(include_top=False). Received: {str(weights)!r}, which does not exist"
        )
    return str(path)
