"""Training: Keras Xception transfer learning, tuned, checkpointed, evaluated.

``python -m training --help``; the model builder is :func:`training.model.make_model`.
"""
