"""The fast path's input: pooled base features (or block-12 maps), computed once, cached.

A frozen base gives an image the same features every epoch, so they are computed once
per (image size, base weights, data) and the top trains on them in well under a second
an epoch. On the CPU the base runs in ``channels_last`` memory format (~1.5x faster
than NCHW here). The cache is written in shards of :data:`SHARD` images, so a long
extraction can be stopped and resumed (``timeout 840 python -m torch_training features``
in pieces, under the shared lock): finished shards are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lambda_function import files
from lambda_function.model import open_session
from lambda_function.preprocessing import scale
from torch_training.xception import Xception
from training import data

SHARD = 256
BATCH = 32

Extractor = Callable[[torch.Tensor], torch.Tensor]


def pooled(base: Xception) -> Extractor:
    """Scaled NCHW pixels to (N, 2048) pooled features."""
    return base.pooled


def block12(base: Xception) -> Extractor:
    """Scaled NCHW pixels to block 12's (N, 728, h, w) map: fine-tuning's frozen part."""
    return base.entry_flow


def onnx_pooled(base: Xception, image_size: int, path: Path, threads: int = 1) -> Extractor:
    """:func:`pooled` run by onnxruntime on the base's own export (~1.5x faster on a CPU).

    The base is exported once to ``path`` (NCHW input, legacy exporter, opset 17) and
    reused; its features equal PyTorch's within float32 rounding (tested).
    """
    from torch_training.to_onnx import quiet_export

    if not path.is_file():
        dummy = torch.zeros(1, 3, image_size, image_size)
        files.write_atomic(path, lambda staged: quiet_export(_Pooled(base).eval(), dummy, staged))
    session = open_session(path, intra_op_threads=threads, quiet=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.contiguous().numpy()})[0])

    return run


class _Pooled(torch.nn.Module):
    def __init__(self, base: Xception) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.pooled(x)


def extract(
    fn: Extractor,
    pixels: np.ndarray,
    device: torch.device,
    *,
    batch_size: int = BATCH,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """``fn`` on uint8 NHWC ``pixels`` (scaled here, as serving does), with a progress bar."""
    chunks = []
    channels_last = device.type == "cpu"
    with torch.inference_mode(), tqdm(total=len(pixels), desc=desc, unit="img") as bar:
        for start in range(0, len(pixels), batch_size):
            x = torch.from_numpy(scale(pixels[start : start + batch_size])).permute(0, 3, 1, 2)
            x = x.to(device, memory_format=torch.channels_last if channels_last else None)
            chunks.append(fn(x).float().cpu().numpy().astype(dtype))
            bar.update(len(x))
    return np.concatenate(chunks)


def cached(
    make: Callable[[], Extractor],
    pixels: Callable[[], np.ndarray],
    count: int,
    folder: Path | None,
    device: torch.device,
    *,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """:func:`extract`, shard by shard from ``folder`` when computed before, else written.

    ``make`` (which builds the extractor) and ``pixels`` are called only if a shard is missing.
    """
    if folder is None:
        return extract(make(), pixels(), device, desc=desc, dtype=dtype)
    folder.mkdir(parents=True, exist_ok=True)
    shards, loaded, fn = [], None, None
    for index, start in enumerate(range(0, count, SHARD)):
        stop = min(start + SHARD, count)
        path = folder / f"{index:04d}-{start}-{stop}.npy"
        if not path.is_file():
            loaded = pixels() if loaded is None else loaded
            fn = make() if fn is None else fn
            part = extract(
                fn, loaded[start:stop], device, desc=f"{desc} {start}-{stop}/{count}", dtype=dtype
            )
            data.save_array(path, part)
        shards.append(np.load(path))
    return np.concatenate(shards)


def cache_folder(
    cache_dir: Path | None, kind: str, image_size: int, weights_fp: str, data_fp: str, split: str
) -> Path | None:
    """Where one split's cached ``kind`` (``pooled``/``block12``) lives."""
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"torch-{kind}-{image_size}-{weights_fp[:16]}-{data_fp[:16]}" / split
