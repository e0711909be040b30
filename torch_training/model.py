"""The transfer model: the frozen ImageNet base, global average pooling, a small dense top.

The top mirrors Keras' (``training.model``): ``Linear(2048, inner) -> ReLU -> Dropout``
(left out when ``size_inner`` is 0), then ``Linear(inner, n_classes)`` giving logits.
:class:`Classifier` keeps the base's BatchNorm layers in eval mode even in
``model.train()``, as Keras runs a frozen base with ``training=False``: batch statistics
would otherwise replace the ImageNet running statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from torch_training.xception import N_FEATURES, Xception
from training.config import check_head


def make_head(size_inner: int = 100, droprate: float = 0.2, n_classes: int = 10) -> nn.Sequential:
    """Pooled features in, logits out."""
    check_head(size_inner, droprate, n_classes)
    if not size_inner:
        return nn.Sequential(nn.Linear(N_FEATURES, n_classes))
    return nn.Sequential(
        nn.Linear(N_FEATURES, size_inner),
        nn.ReLU(),
        nn.Dropout(droprate),
        nn.Linear(size_inner, n_classes),
    )


class Classifier(nn.Module):
    """NCHW scaled pixels to logits: ``head(mean(base(x)))``.

    ``trainable_from``: ``""`` freezes the whole base; ``"block13"`` or ``"block14"``
    lets that block's and the ones above its convolutions train (see :func:`unfreeze`).
    """

    def __init__(self, base: Xception, head: nn.Sequential, trainable_from: str = "") -> None:
        super().__init__()
        self.base, self.head = base, head
        unfreeze(base, trainable_from)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base.pooled(x))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self.base.eval()  # never batch statistics in the base, frozen or fine-tuned
        return self


def unfreeze(base: Xception, trainable_from: str) -> None:
    """Freeze ``base``, then let the convolutions from ``trainable_from`` up train.

    BatchNorm stays frozen, its scale and shift as well as its statistics, as in the
    Keras path's fine-tuning (``training.finetune.unfreeze``).
    """
    top: list[nn.Module] = [base.sepconv14a, base.sepconv14b]
    choices: dict[str, list[nn.Module]] = {"": [], "block14": top, "block13": [base.block13, *top]}
    if trainable_from not in choices:
        raise ValueError(
            f"Expected fine-tuning from '', 'block13' or 'block14'. Received: {trainable_from!r}"
        )
    base.requires_grad_(False)
    for part in choices[trainable_from]:
        for module in part.modules():
            if isinstance(module, nn.Conv2d):
                module.requires_grad_(True)


class ServedModel(nn.Module):
    """What is exported: the served input (NHWC float32 in [-1, 1]) to logits."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.permute(0, 3, 1, 2))


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
