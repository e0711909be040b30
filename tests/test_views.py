"""Cached views: streamed a batch at a time, equal to the whole-split path, keyed per view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.datasets import copy_subset


@pytest.mark.slow
def test_streamed_views_equal_the_whole_split_features(tmp_path: Path, data_dir: Path) -> None:
    from training import data, features, views
    from training.model import make_base, make_feature_extractor

    dataset = data.scan(copy_subset(data_dir, tmp_path / "data", ["hat", "pants"], per_class=3))
    extractor = make_feature_extractor(make_base(71, None))
    files = dataset["train"].files
    pixels = data.decode_split(dataset["train"], 71)
    whole = features.extract(extractor, pixels)
    mirrored = features.extract(extractor, np.ascontiguousarray(pixels[:, :, ::-1]))
    np.testing.assert_allclose(
        views.stream_features(extractor, files, 71, batch_size=4), whole, atol=1e-5
    )
    np.testing.assert_allclose(
        views.stream_features(extractor, files, 71, "flip", batch_size=4), mirrored, atol=1e-5
    )
    assert not np.allclose(whole, mirrored)


def test_each_view_has_its_own_cache_file_and_orig_is_the_fast_paths() -> None:
    from training import features, views

    args = (Path("c"), 299, "w" * 64, "d" * 64, "train")
    assert views.view_cache_path(*args, "orig") == features.cache_path(*args)
    assert views.view_cache_path(*args, "flip").name.startswith("features_flip-299-")
    assert views.view_cache_path(*args, "zoom").name.startswith("features_zoom-299-")
    with pytest.raises(
        ValueError, match=r"Expected a view among orig, flip, zoom\. Received: 'crop'"
    ):
        views.split_view_features(None, "train", "crop", 299, lambda: None, None, "w")


def test_zoom_is_the_central_part_scaled_back_to_full_size() -> None:
    from training.views import zoom

    pixels = np.zeros((2, 50, 40, 3), dtype=np.uint8)
    pixels[:, 5:45, 4:36] = 200  # the central 80%: what zoom keeps
    pixels[1, 5:45, 4:20] = 100  # the second photo's left half of it is darker
    out = zoom(pixels)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    assert (out[0] == 200).all()  # the border is gone, the centre fills the frame
    assert (out[1, :, :18] == 100).all() and (out[1, :, 22:] == 200).all()
