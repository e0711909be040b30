"""Training: Keras Xception transfer learning, cross-validated, shipped, evaluated.

``python -m training --help``; the recipes are :mod:`training.methods`, the engine that
trains them :mod:`training.engine`.
"""
