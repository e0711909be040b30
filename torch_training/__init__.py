"""Training in PyTorch: the Keras path's transfer model, served by the same Lambda.

``python -m torch_training --help``. Never imports TensorFlow; the base is a
Keras-faithful Xception (:mod:`torch_training.xception`) with the ImageNet weights ported
from the Keras file (:mod:`torch_training.port`).
"""
