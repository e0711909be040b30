"""Keras' pooled Xception features for a few photos: the reference of the parity test.

Run by the main venv (the one with TensorFlow), so the torch venv needs no TensorFlow::

    python tests_torch/keras_features.py WEIGHTS SIZE OUT.npy PHOTO...

The photos are preprocessed by the project's one preprocessing contract, as serving does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> None:
    import keras

    from lambda_function.preprocessing import preprocess_batch

    weights, size, out, *photos = argv
    x = preprocess_batch([Path(p).read_bytes() for p in photos], int(size))
    base = keras.applications.Xception(
        weights=weights, include_top=False, input_shape=x.shape[1:], pooling="avg"
    )
    np.save(out, np.asarray(base.predict(x, verbose=0), dtype=np.float32))


if __name__ == "__main__":
    main(sys.argv[1:])
