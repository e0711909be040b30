"""Load the Keras checkpoint and check that it is a model we can ship.

The service feeds NHWC float32 images of one square size and reads one vector of logits
per image, so the model must take ``(None, S, S, 3)`` and return ``(None, n_labels)``,
without a final softmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convert.checkpoint import Checkpoint, LoadedCheckpoint
from convert.errors import ConvertError

if TYPE_CHECKING:
    import keras


def load_checked_model(checkpoint: Checkpoint) -> tuple[keras.Model, LoadedCheckpoint]:
    """Load ``checkpoint`` with ``compile=False`` and check its input and output.

    Returns the model (functional: a ``keras.Sequential`` is wrapped, since tf2onnx
    cannot convert one) and the checkpoint with its image size filled in.
    """
    import keras

    try:
        model = keras.models.load_model(checkpoint.path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConvertError(
            f"{checkpoint.path}: not a Keras model ({type(exc).__name__}: {exc}). Expected a "
            "full model saved with model.save() as .h5 or .keras (not weights only)"
        ) from exc
    size = check_input(model, checkpoint)
    check_output(model, checkpoint, len(checkpoint.labels))
    if isinstance(model, keras.Sequential):
        model = as_functional(model)
    return model, checkpoint.loaded(size)


def check_input(model: keras.Model, checkpoint: Checkpoint) -> int:
    """The model's square input size; it must be ``(None, S, S, 3)``."""
    shapes = [tuple(t.shape) for t in model.inputs]
    expected = f"(None, {checkpoint.image_size or 'S'}, {checkpoint.image_size or 'S'}, 3)"
    if len(shapes) != 1:
        raise ConvertError(
            f"{checkpoint.path}: expected one input of shape {expected}. Received "
            f"{len(shapes)} inputs: {shapes}"
        )
    shape = shapes[0]
    square = len(shape) == 4 and shape[1] == shape[2] and isinstance(shape[1], int)
    if not (square and shape[3] == 3) or shape[0] is not None:
        raise ConvertError(
            f"{checkpoint.path}: expected an input of shape {expected} (NHWC RGB, any batch). "
            f"Received {shape}"
        )
    if checkpoint.image_size is not None and shape[1] != checkpoint.image_size:
        raise ConvertError(
            f"{checkpoint.path}: the manifest says image_size={checkpoint.image_size}, but "
            f"the model's input is {shape}"
        )
    return int(shape[1])


def check_output(model: keras.Model, checkpoint: Checkpoint, n_labels: int) -> None:
    """One output of shape ``(None, n_labels)``: logits, not softmax probabilities."""
    shapes = [tuple(t.shape) for t in model.outputs]
    expected = f"one output of shape (None, {n_labels}), one logit per label"
    if len(shapes) != 1 or len(shapes[0]) != 2 or shapes[0][1] != n_labels:
        raise ConvertError(f"{checkpoint.path}: expected {expected}. Received {shapes}")
    if _ends_in_softmax(model):
        raise ConvertError(
            f"{checkpoint.path}: expected logits, but the last layer "
            f"{model.layers[-1].name!r} applies softmax. Rebuild the top without it "
            "(the service applies softmax itself)"
        )


def as_functional(model: keras.Model) -> keras.Model:
    """Wrap a model in a functional one with a single named input (tf2onnx needs it)."""
    import keras

    inputs = keras.Input(model.inputs[0].shape[1:], name="input")
    return keras.Model(inputs, model(inputs), name=model.name)


def _ends_in_softmax(model: keras.Model) -> bool:
    last = model.layers[-1] if model.layers else None
    if last is None:
        return False
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"
