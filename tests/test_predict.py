"""``mnist99 predict``: one JSON line per image file, and one error line (exit 2) for a bad file."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist99.cli import main
from mnist99.data.images import load_image


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A saved uint8 (N, 28, 28) -> (N, 10) softmax model (the shape of an exported ensemble)."""
    import keras

    keras.utils.set_random_seed(0)
    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    model = keras.Model(digits, keras.layers.Dense(10, activation="softmax")(x))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path, model


def write_digits(folder):
    files = []
    for name, points in [("one.png", [(100, 20), (100, 180)]), ("seven.png", [(40, 30), (160, 30), (80, 180)])]:
        image = Image.new("RGB", (200, 200), "white")
        ImageDraw.Draw(image).line(points, fill="black", width=18)
        image.save(folder / name)
        files.append(str(folder / name))
    return files


def test_predict_prints_one_json_line_per_file(tiny_model_file, tmp_path, capsys):
    path, model = tiny_model_file
    files = write_digits(tmp_path)
    assert main(["predict", "--model", str(path), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    expected = model.predict(np.stack([load_image(f) for f in files]), verbose=0)
    for line, file, probs in zip(lines, files, expected):
        record = json.loads(line)
        assert record["file"] == file and record["digit"] == int(probs.argmax())
        assert record["confidence"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert [d for d, _ in record["top3"]] == list(np.argsort(-probs)[:3])
        assert record["top3"][0] == [record["digit"], record["confidence"]]


def test_predict_with_a_bad_file_prints_nothing_and_exits_2(tiny_model_file, tmp_path, capsys):
    path, _ = tiny_model_file
    good = write_digits(tmp_path)[0]
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["predict", "--model", str(path), good, str(tmp_path / "notes.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"mnist99 predict: error: {tmp_path / 'notes.txt'}: not an image Pillow can read " \
                           "(PNG, JPEG, BMP, GIF, TIFF, WebP...)\n"


def test_predict_with_a_missing_model_is_one_line(tmp_path, capsys):
    good = write_digits(tmp_path)[0]
    assert main(["predict", "--model", str(tmp_path / "nope.keras"), good]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.keras" in err


@pytest.mark.slow
def test_predict_command_bad_file_exit_code_and_stderr(tmp_path):
    """The command itself: exit 2, nothing on stdout, one error line and no traceback on stderr.

    TensorFlow 2.21's C++ start-up lines (oneDNN, CUDA stub) precede it: they are printed before
    absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence them.
    """
    (tmp_path / "empty.png").write_bytes(b"")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "mnist99.cli", "predict", "--model", "x.keras",
                           str(tmp_path / "empty.png")], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stdout == ""
    ours = [line for line in done.stderr.splitlines() if line.startswith("mnist99")]
    assert ours == [f"mnist99 predict: error: {tmp_path / 'empty.png'}: empty file (0 bytes)"]
    assert done.stderr.endswith(ours[0] + "\n") and "Traceback" not in done.stderr
