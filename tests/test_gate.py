"""``python -m convert.gate``: a candidate model against the live one on the same labelled
photos (paired, bootstrap interval), with tiny models whose answers a test can predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert.gate import decide, main, paired_bootstrap
from tests.deploy_local import labelled_folder
from tests.lambda_testing import LABELS, build_model

RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)
PURPLE = (230, 20, 225)
"""Labelled dress: red just outweighs blue for the live model, not for the candidate that
weighs blue 8.5 instead of 8."""


def shades(colour: tuple[int, int, int], n: int) -> list[tuple[int, int, int]]:
    return [tuple(max(0, c - i) for c in colour) for i in range(n)]  # type: ignore[misc]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """61 labelled photos: 20 per colour class, and the one purple dress."""
    root = labelled_folder(
        tmp_path / "data",
        "validation",
        {
            "dress": [*shades(RED, 20), PURPLE],
            "hat": shades(GREEN, 20),
            "longsleeve": shades(BLUE, 20),
        },
    )
    return root / "validation"


def model(path: Path, **weights: float) -> Path:
    """The tiny model, with some channel-to-label weights changed: ``rg=8`` maps red to
    the second label (``r``/``g``/``b`` to label index 0/1/2)."""
    w = np.zeros((3, len(LABELS)), dtype=np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 8.0
    for key, value in weights.items():
        w["rgb".index(key[0]), "rgb".index(key[1])] = value
    return build_model(path, weights=w)


def gate(
    tmp_path: Path, candidate: Path, live: Path, photos: Path, *extra: str
) -> tuple[int, dict]:
    report = tmp_path / "gate.json"
    code = main(["--candidate", str(candidate), "--live", str(live), str(photos),
                 "--report", str(report), "--resamples", "2000", *extra])  # fmt: skip
    return code, json.loads(report.read_text()) if report.exists() else {}


def test_a_clearly_worse_candidate_is_refused(tmp_path, photos, capsys) -> None:
    live = model(tmp_path / "live.onnx")
    worse = model(tmp_path / "worse.onnx", rr=0.0, rg=8.0, gg=0.0, gr=8.0)  # red, green swapped
    code, result = gate(tmp_path, worse, live, photos)
    assert code == 1
    assert result["photos"] == 61 and result["live_accuracy"] == 1.0
    assert result["candidate_accuracy"] == pytest.approx(20 / 61)
    assert result["interval"][1] < 0 and not result["accepted"]
    assert result["only_live_right"] == 41 and result["only_candidate_right"] == 0
    assert "REFUSED: worse: the whole interval is below zero" in capsys.readouterr().out


def test_a_better_candidate_is_accepted(tmp_path, photos, capsys) -> None:
    live = model(tmp_path / "live.onnx", rr=0.0, rg=8.0, gg=0.0, gr=8.0)
    code, result = gate(tmp_path, model(tmp_path / "good.onnx"), live, photos)
    assert code == 0 and result["accepted"]
    assert result["difference"] == pytest.approx(41 / 61)
    assert result["interval"][0] > 0
    assert "ACCEPTED" in capsys.readouterr().out


def test_the_same_model_is_accepted_with_a_zero_interval(tmp_path, photos) -> None:
    live = model(tmp_path / "live.onnx")
    code, result = gate(tmp_path, model(tmp_path / "same.onnx"), live, photos)
    assert code == 0
    assert result["difference"] == 0 and result["interval"] == [0.0, 0.0]


def test_a_small_drop_the_photos_cannot_prove_is_refused_past_the_allowance(
    tmp_path, photos
) -> None:
    """One photo of 61 lost (-1.6 points): the interval reaches zero, so only the
    allowance refuses it; an allowance of 2 points lets it through."""
    live, candidate = model(tmp_path / "live.onnx"), model(tmp_path / "c.onnx", bb=8.5)
    code, result = gate(tmp_path, candidate, live, photos)
    assert (result["only_live_right"], result["only_candidate_right"]) == (1, 0)
    assert result["interval"][1] == 0.0 and result["difference"] == pytest.approx(-1 / 61)
    assert code == 1 and result["reason"].startswith("worse: accuracy -1.6%, below")
    assert gate(tmp_path, candidate, live, photos, "--max-drop", "0.02")[0] == 0


def test_models_with_other_labels_cannot_be_compared(tmp_path, photos, capsys) -> None:
    live = model(tmp_path / "live.onnx")
    other = build_model(tmp_path / "other.onnx", labels=tuple(reversed(LABELS)))
    assert gate(tmp_path, other, live, photos) == (2, {})
    assert "Expected the candidate to answer the live model's labels" in capsys.readouterr().err


def test_a_missing_model_or_unlabelled_folder_is_bad_input(tmp_path, photos, capsys) -> None:
    live = model(tmp_path / "live.onnx")
    assert gate(tmp_path, tmp_path / "absent.onnx", live, photos)[0] == 2
    assert "absent.onnx: no such model file" in capsys.readouterr().err
    empty = tmp_path / "empty" / "validation"
    empty.mkdir(parents=True)
    assert gate(tmp_path, live, live, empty)[0] == 2
    assert "Expected at least two class folders" in capsys.readouterr().err


def test_the_bootstrap_pairs_the_photos_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    live = rng.random(200) < 0.8
    candidate = live.copy()
    candidate[:10] = ~candidate[:10]
    interval = paired_bootstrap(live, candidate, 2000, 0.95, seed=3)
    assert interval == paired_bootstrap(live, candidate, 2000, 0.95, seed=3)
    point = candidate.mean() - live.mean()
    assert interval[0] <= point <= interval[1]
    # paired: only the 10 discordant photos vary (width ~6 points), far narrower than an
    # unpaired interval over two accuracies of ~0.8 on 200 photos (~16 points wide)
    assert interval[1] - interval[0] < 0.08
    with pytest.raises(ValueError, match="Expected two equal, non-empty"):
        paired_bootstrap(live, candidate[:5], 100, 0.95, 0)


def test_worse_means_an_interval_below_zero_or_a_drop_past_the_allowance() -> None:
    assert decide(-0.002, (-0.01, 0.004), 0.01)[0]
    assert not decide(-0.005, (-0.009, -0.001), 0.01)[0]
    assert not decide(-0.02, (-0.05, 0.01), 0.01)[0]
    assert decide(0.03, (0.0, 0.06), 0.01)[0]
