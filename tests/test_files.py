"""Writing beside, then renaming: what every stage uses for the files others read."""

from __future__ import annotations

from pathlib import Path

from lambda_function import files


def test_text_is_written_as_utf8_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "models" / "manifest.json"

    assert files.write_text_atomic(target, '{"label": "été"}') == target

    assert target.read_bytes() == '{"label": "été"}'.encode()
    assert list(target.parent.iterdir()) == [target]


def test_the_writer_gets_a_temporary_path_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []
    target = tmp_path / "serve.onnx"

    files.write_atomic(target, lambda path: (seen.append(path), path.write_bytes(b"onnx")))

    assert seen[0].parent == tmp_path and seen[0] != target
    assert target.read_bytes() == b"onnx"
