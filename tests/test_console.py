"""The console by default: what mnist99 says (stage, member, epochs, result), none of the libraries' chatter."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from mnist99.cli import QUIET_LIBRARIES, quiet_libraries
from tests.conftest import require_real_data

OUR_LINES = ("train: ", "  epoch ", "run id: ", "MLflow UI: ")


@pytest.mark.slow
@pytest.mark.integration
def test_a_stage_prints_its_own_lines_only(tmp_path):
    require_real_data()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell: the CLI sets it
    out = subprocess.run([sys.executable, "-m", "mnist99.cli", "train", "-c", "smoke", "--set", "train.verbose=2",
                          "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"train.checkpoint_dir={tmp_path / 'ckpt'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert [line for line in lines if not line.startswith(OUR_LINES)] == [], "\n".join(lines)
    assert sum(line.startswith("  epoch 1/1") for line in lines) == 1


def test_config_show_prints_the_config_and_nothing_on_stderr(tmp_path):
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell: the CLI sets it
    out = subprocess.run([sys.executable, "-m", "mnist99.cli", "config", "show", "-c", "quick"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-3000:]
    assert out.stdout.startswith("# merged: ") and "\n  epochs: 1\n" in out.stdout


def test_quiet_mutes_the_libraries_and_verbose_leaves_them(monkeypatch):
    for name in QUIET_LIBRARIES:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    # Recorded by monkeypatch, so both variables are as before once the test ends.
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "unset by the test")
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "unset by the test")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    with warnings.catch_warnings():
        quiet_libraries(verbose=True)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and "MLFLOW_LOGGING_LEVEL" not in os.environ
        assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
        assert logging.getLogger("mlflow").level == logging.NOTSET
        quiet_libraries(verbose=False)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["MLFLOW_LOGGING_LEVEL"] == "ERROR"
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"  # no download bars on stderr
        assert all(logging.getLogger(name).level == logging.ERROR for name in QUIET_LIBRARIES)
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("library chatter", UserWarning, "x.py", 1, module="mlflow.data")
            warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="mnist99.stages")
        assert [str(w.message) for w in caught] == ["ours"]


def test_muted_stderr_silences_what_c_code_writes_to_fd_2(capfd, monkeypatch):
    """C++ libraries (TensorFlow at import, LiteRT's "Created ... XNNPACK delegate") write to file
    descriptor 2 directly; LiteRT's lines follow TF_CPP_MIN_LOG_LEVEL as TensorFlow's do."""
    from mnist99.console import library_info_muted, muted_stderr

    with muted_stderr():
        os.write(2, b"INFO: library chatter\n")
    with muted_stderr(False):
        os.write(2, b"kept\n")
    assert capfd.readouterr().err == "kept\n"
    for level, muted in (("0", False), ("2", True), ("3", True)):
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
        assert library_info_muted() is muted
