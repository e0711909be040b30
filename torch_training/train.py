"""One training run: fit the top (and optionally the top blocks), keep the best epoch.

The Keras path's recipe (``training.train``), in torch:

* **head**: the top trains on cached pooled features of the frozen base;
* **fine-tune** (``fine_tune_from``): after the head, ``block13``/``block14`` and up
  train at a low learning rate on cached block-12 activations, BatchNorm frozen.

Adam, cross-entropy on logits (label smoothing, L2 on the dense kernels as options);
the best epoch by validation accuracy (the first of equals, like Keras'
``save_best_only``) is saved as a ``state_dict`` checkpoint, not the last one.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from lambda_function.files import sha256_file
from torch_training import features
from torch_training.device import seed_everything, small_model_threads
from torch_training.model import Classifier, count_trainable, make_head, unfreeze
from torch_training.port import pretrained_base
from torch_training.xception import Xception
from training import data
from training.config import RunConfig

CHECKPOINT = "xception_v1_{epoch:02d}_{val_accuracy:.3f}.pt"
FORMAT = "torch_training/1"


@dataclass
class Workspace:
    """What runs share: the dataset, the frozen base, pixels, features and activations."""

    dataset: data.Dataset
    weights: Path
    output_dir: Path
    cache_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    engine: str = "torch"  # pooled features by "torch" or "onnxruntime" (CPU, faster)
    _base: Xception | None = None
    _weights_fp: str | None = None
    _cached: dict = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.dataset.labels

    @property
    def base(self) -> Xception:
        """The frozen ImageNet base, ported once."""
        if self._base is None:
            self._base = pretrained_base(self.weights).to(self.device)
        return self._base

    @property
    def weights_fingerprint(self) -> str:
        if self._weights_fp is None:
            self._weights_fp = sha256_file(self.weights)
        return self._weights_fp

    def fingerprint(self) -> dict[str, str]:
        return {"data": self.dataset.fingerprint, "weights": self.weights_fingerprint}

    def pixels(self, split: str, image_size: int) -> np.ndarray:
        return data.load_pixels(self.dataset, split, image_size, self.cache_dir)

    def targets(self, split: str) -> np.ndarray:
        return self.dataset[split].targets

    def features(self, split: str, image_size: int) -> np.ndarray:
        """Pooled base features of a split (memory, then disk, else computed)."""
        fn = features.pooled
        if self.engine == "onnxruntime":
            name = f"xception-pooled-{image_size}-{self.weights_fingerprint[:16]}.onnx"
            path = (self.cache_dir or self.output_dir) / name

            def fn(base: Xception) -> features.Extractor:
                return features.onnx_pooled(base, image_size, path, torch.get_num_threads())

        return self._extract("pooled", fn, split, image_size, np.float32)

    def activations(self, split: str, image_size: int) -> np.ndarray:
        """Block 12's output for a split, float16: fine-tuning's cached input."""
        return self._extract("block12", features.block12, split, image_size, np.float16)

    def _extract(self, kind: str, fn, split: str, image_size: int, dtype: type) -> np.ndarray:
        key = (kind, split, image_size)
        if key not in self._cached:
            folder = features.cache_folder(
                self.cache_dir,
                kind,
                image_size,
                self.weights_fingerprint,
                self.dataset.fingerprint,
                split,
            )
            self._cached[key] = features.cached(
                lambda: fn(self.base),
                lambda: self.pixels(split, image_size),
                len(self.dataset[split]),
                folder,
                self.device,
                desc=f"{kind} {split}@{image_size}",
                dtype=dtype,
            )
        return self._cached[key]


@dataclass
class RunResult:
    """A finished run: its best checkpoint file and how training went."""

    config: RunConfig
    checkpoint: Path
    best_epoch: int
    best_val_accuracy: float
    history: dict[str, list[float]]
    seconds: float
    trainable_params: int
    model: Classifier = field(repr=False)

    @property
    def name(self) -> str:
        return self.config.run_name


def train_run(ws: Workspace, cfg: RunConfig) -> RunResult:
    """Train the head on the frozen base's cached features; save the best epoch."""
    generator = seed_everything(cfg.seed)
    size, n_classes = cfg.image_size, len(ws.labels)
    head = make_head(cfg.size_inner, cfg.droprate, n_classes).to(ws.device)
    model = Classifier(ws.base, head)
    x_val, y_val = ws.features("validation", size), ws.targets("validation")
    x_train = ws.features("train", size)
    start = time.perf_counter()  # training time, not feature extraction
    with small_model_threads(ws.device):
        fit = _fit(
            head, x_train, ws.targets("train"), x_val, y_val, cfg,
            epochs=cfg.epochs, learning_rate=cfg.learning_rate, generator=generator,
            device=ws.device,
        )  # fmt: skip
    head.load_state_dict(fit.best_state)
    return _finish(ws, cfg, model, fit, time.perf_counter() - start, count_trainable(head))


def fit_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: RunConfig,
    n_classes: int,
    device: torch.device | None = None,
) -> tuple[nn.Sequential, dict[str, list[float]]]:
    """Train a head on pooled features (the fast path alone); returns it at its last epoch."""
    generator = seed_everything(cfg.seed)
    device = device or torch.device("cpu")
    head = make_head(cfg.size_inner, cfg.droprate, n_classes).to(device)
    with small_model_threads(device):
        fit = _fit(
            head, x_train, y_train, x_val, y_val, cfg,
            epochs=cfg.epochs, learning_rate=cfg.learning_rate, generator=generator,
            device=device,
        )  # fmt: skip
    return head.eval(), fit.history


def fine_tune_run(ws: Workspace, cfg: RunConfig, head_run: RunResult) -> RunResult:
    """Fine-tune ``cfg.fine_tune_from`` and up, starting from ``head_run``'s trained head."""
    generator = seed_everything(cfg.seed)
    size = cfg.image_size
    model = copy.deepcopy(head_run.model)  # its own base: the workspace's stays frozen
    unfreeze(model.base, cfg.fine_tune_from)
    top = _ExitTop(model)
    start = time.perf_counter()
    fit = _fit(
        top, ws.activations("train", size), ws.targets("train"),
        ws.activations("validation", size), ws.targets("validation"), cfg,
        epochs=cfg.fine_tune_epochs, learning_rate=cfg.fine_tune_learning_rate,
        generator=generator, device=ws.device,
    )  # fmt: skip
    top.load_state_dict(fit.best_state)
    return _finish(ws, cfg, model, fit, time.perf_counter() - start, count_trainable(top))


def predict_cached(ws: Workspace, result_model: Classifier, cfg: RunConfig, split: str):
    """Logits of ``split`` from cached inputs (features or activations), as training saw."""
    fine_tuned = bool(cfg.fine_tune_from)
    module = _ExitTop(result_model) if fine_tuned else result_model.head
    x = (ws.activations if fine_tuned else ws.features)(split, cfg.image_size)
    return _logits(module, x, ws.device)


def save_checkpoint(path: Path, model: Classifier, cfg: RunConfig, labels, val_accuracy: float):
    """The model's ``state_dict`` and what is needed to rebuild it."""
    torch.save(
        {
            "format": FORMAT,
            "labels": list(labels),
            "image_size": cfg.image_size,
            "size_inner": cfg.size_inner,
            "droprate": cfg.droprate,
            "val_accuracy": val_accuracy,
            "state_dict": model.state_dict(),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> tuple[Classifier, dict]:
    """Rebuild the model saved at ``path`` (eval mode) and return it with its record."""
    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"Expected a torch_training checkpoint (.pt) at {path}. {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(
            f"Expected a checkpoint of format {FORMAT!r} at {path}. "
            f"Received: {record.get('format') if isinstance(record, dict) else type(record)}"
        )
    head = make_head(record["size_inner"], record["droprate"], len(record["labels"]))
    model = Classifier(Xception(), head)
    model.load_state_dict(record["state_dict"])
    return model.eval(), {k: v for k, v in record.items() if k != "state_dict"}


@dataclass
class _Fit:
    history: dict[str, list[float]]
    best_epoch: int
    best_state: dict


class _ExitTop(nn.Module):
    """Cached block-12 activations to logits: blocks 13-14, pooling, head (BN frozen)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.base.exit_flow(x.float()).mean(dim=(2, 3))
        return self.model.head(features)

    def train(self, mode: bool = True) -> _ExitTop:
        super().train(mode)
        self.model.base.eval()
        return self


def _fit(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: RunConfig,
    *,
    epochs: int,
    learning_rate: float,
    generator: torch.Generator,
    device: torch.device,
) -> _Fit:
    """Adam on ``model``'s trainable parameters; the best epoch by validation accuracy."""
    if not learning_rate > 0:
        raise ValueError(f"Expected a learning rate > 0. Received: learning_rate={learning_rate}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate, eps=1e-7)  # Keras' epsilon
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    history: dict[str, list[float]] = {
        "accuracy": [],
        "loss": [],
        "val_accuracy": [],
        "val_loss": [],
    }
    best_epoch, best_state = 0, copy.deepcopy(model.state_dict())
    for epoch in range(1, epochs + 1):
        model.train()
        losses, hits = [], 0
        bar = tqdm(
            _batches(len(x_train), cfg.batch_size, generator),
            desc=f"epoch {epoch}/{epochs}",
            total=-(-len(x_train) // cfg.batch_size),
            unit="batch",
            leave=False,
            disable=None,
        )
        for index in bar:
            y = torch.from_numpy(y_train[index]).long().to(device)
            logits = model(torch.from_numpy(x_train[index]).to(device))
            loss = functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if cfg.l2:
                loss = loss + cfg.l2 * sum((w**2).sum() for w in kernels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item() * len(index))
            hits += int((logits.argmax(1) == y).sum())
        val_logits = _logits(model, x_val, device)
        y_val_t = torch.from_numpy(y_val).long()
        history["loss"].append(sum(losses) / len(x_train))
        history["accuracy"].append(hits / len(x_train))
        history["val_loss"].append(
            float(functional.cross_entropy(torch.from_numpy(val_logits), y_val_t))
        )
        history["val_accuracy"].append(float((val_logits.argmax(1) == y_val).mean()))
        print(
            f"epoch {epoch}/{epochs}: loss {history['loss'][-1]:.4f} accuracy "
            f"{history['accuracy'][-1]:.4f} val_loss {history['val_loss'][-1]:.4f} "
            f"val_accuracy {history['val_accuracy'][-1]:.4f}",
            flush=True,
        )
        if not best_epoch or history["val_accuracy"][-1] > history["val_accuracy"][best_epoch - 1]:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
    return _Fit(history, best_epoch, best_state)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    order = torch.randperm(n, generator=generator).numpy()
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _logits(module: nn.Module, x: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        out = [
            module(torch.from_numpy(x[i : i + batch]).to(device)).float().cpu().numpy()
            for i in range(0, len(x), batch)
        ]
    module.train(was_training)
    return np.concatenate(out)


def _finish(
    ws: Workspace, cfg: RunConfig, model: Classifier, fit: _Fit, seconds: float, trainable: int
) -> RunResult:
    """Save the best epoch's model under the run's folder; describe the run."""
    run_dir = ws.output_dir / "runs" / cfg.run_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    val_accuracy = fit.history["val_accuracy"][fit.best_epoch - 1]
    path = run_dir / CHECKPOINT.format(epoch=fit.best_epoch, val_accuracy=val_accuracy)
    model = model.eval()
    save_checkpoint(path, model, cfg, ws.labels, val_accuracy)
    return RunResult(
        config=cfg,
        checkpoint=path,
        best_epoch=fit.best_epoch,
        best_val_accuracy=val_accuracy,
        history=fit.history,
        seconds=seconds,
        trainable_params=trainable,
        model=model,
    )
