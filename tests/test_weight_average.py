"""Stochastic weight averaging: the running mean, applied and restored."""

from __future__ import annotations

import numpy as np


def dense(values: float):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.set_weights([np.full((3, 2), values, np.float32), np.full(2, values, np.float32)])
    return model


def test_the_mean_of_the_added_weights_is_applied_then_the_trained_ones_restored() -> None:
    from training.weight_average import WeightAverage

    model = dense(0.0)
    average = WeightAverage(model.trainable_weights)
    with average.applied():  # nothing added yet: the trained weights are the model
        assert np.all(model.get_weights()[0] == 0.0)
    for value in (1.0, 2.0, 6.0):
        model.set_weights([np.full((3, 2), value), np.full(2, value)])
        average.add()
    x = np.ones((1, 3), np.float32)
    with average.applied():
        assert all(np.allclose(w, 3.0) for w in model.get_weights())
        assert np.allclose(model(x), 3.0 * 3 + 3.0)
    assert all(np.allclose(w, 6.0) for w in model.get_weights())  # training goes on from here
    average.assign()
    assert all(np.allclose(w, 3.0) for w in model.get_weights()) and average.count == 3
