"""The robustness report (mnist99.reports.robustness) on a fixed-weight model, and benchmarks/robustness.py."""
from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pytest

from mnist99.data import corruptions
from mnist99.reports import plots
from mnist99.reports.robustness import Robustness, csv_text, digits_predicted, figure, markdown, robustness
from tests.conftest import ROOT, require_real_data


@pytest.fixture(scope="module")
def bar_reader():
    """uint8 (N, 28, 28) -> softmax over 10: reads tiny_splits' label, the row band (2 + 2k, 3 + 2k) with the
    most ink. Fixed weights, so its accuracy is 1 on clean digits and falls as corruptions move or hide the bar."""
    import keras

    weights = np.zeros((28, 28, 10), np.float32)
    for k in range(10):
        weights[2 + 2 * k:4 + 2 * k, 4:24, k] = 0.5
    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(digits, dense(x))
    dense.set_weights([weights.reshape(784, 10), np.zeros(10, np.float32)])
    return model


@pytest.mark.parametrize("names", [None, ["translate", "stripe"]])
def test_a_time_budget_counts_the_digits_the_table_predicts(bar_reader, tiny_splits, monkeypatch, names):
    from mnist99.reports import robustness as report

    predicted = []

    class Counting:
        def predict_on_batch(self, images):
            predicted.append(len(images))
            return bar_reader.predict_on_batch(images)

    monkeypatch.setattr(report, "as_model", lambda source: Counting())
    robustness(bar_reader, tiny_splits.x_test, tiny_splits.y_test, names=names)
    assert sum(predicted) == digits_predicted(len(tiny_splits.y_test), names) > len(tiny_splits.y_test)


def test_one_row_per_corruption_and_the_means_of_those_rows(bar_reader, tiny_splits):
    report = robustness(bar_reader, tiny_splits.x_test, tiny_splits.y_test, seed=0)
    assert [r["corruption"] for r in report.rows] == corruptions.names()
    assert report.clean == 1.0 and report.size == len(tiny_splits.y_test)
    by_name = {r["corruption"]: r["accuracy"] for r in report.rows}
    for name in ("translate", "stripe"):  # scored again by hand, on the same corrupted digits
        probs = bar_reader.predict(corruptions.corrupt(tiny_splits.x_test, name, seed=0), verbose=0)
        assert by_name[name] == pytest.approx(np.mean(probs.argmax(1) == tiny_splits.y_test))
    assert by_name["translate"] < 0.9 < by_name["brightness"]  # a 4-px shift moves the bar off its band
    seen = [by_name[n] for n in corruptions.names(seen=True)]
    unseen = [by_name[n] for n in corruptions.names(seen=False)]
    summary = report.summary()
    assert summary["mean"] == pytest.approx(np.mean(seen + unseen))
    assert summary["min"] == min(by_name.values()) == by_name[report.worst()]
    assert summary["seen_mean"] == pytest.approx(np.mean(seen))
    assert summary["unseen_mean"] == pytest.approx(np.mean(unseen))
    assert report.metrics() == {**{f"robust/{n}": a for n, a in by_name.items()},
                                **{f"robust/{k}": v for k, v in summary.items()}}


def test_any_model_source_a_file_or_a_float_input_member(bar_reader, tiny_splits, tiny_members, tmp_path):
    path = tmp_path / "reader.keras"
    bar_reader.save(path)
    names = ["occlusion", "fog"]
    in_memory = robustness(bar_reader, tiny_splits.x_test, tiny_splits.y_test, names=names)
    assert robustness(str(path), tiny_splits.x_test, tiny_splits.y_test, names=names) == in_memory
    member = robustness(tiny_members[0], tiny_splits.x_test, tiny_splits.y_test, names=names)  # float (28, 28, 1) input
    assert [r["corruption"] for r in member.rows] == names


def test_table_markdown_csv_and_figure():
    rows = [{"corruption": "fog", "seen": False, "accuracy": 0.5}, {"corruption": "rotate", "seen": True, "accuracy": 0.75}]
    reports = {"a": Robustness(0.99, rows, 100), "b": Robustness(1.0, [dict(r, accuracy=1.0) for r in rows], 100)}
    table = markdown(reports)
    assert table.splitlines()[0] == "| corruption | family | a | b |"
    assert "| fog | unseen | 50.00 | 100.00 |" in table and "| **mean** |  | 62.50 | 100.00 |" in table
    parsed = list(csv.DictReader(io.StringIO(csv_text(reports))))
    assert [r["row"] for r in parsed] == ["fog", "rotate", "clean", "mean", "min", "seen_mean", "unseen_mean"]
    assert float(parsed[-1]["a"]) == 0.5 and float(parsed[-2]["a"]) == 0.75 and float(parsed[4]["a"]) == 0.5
    fig = figure(reports["a"])
    bars = fig.axes[0].containers[0]
    assert [b.get_height() for b in bars] == [0.5, 0.75]
    assert bars[0].get_facecolor() != bars[1].get_facecolor()  # held out and seen in their own colours
    plots.close(fig)


@pytest.mark.integration
def test_the_benchmark_prints_one_column_per_model_and_the_baseline(tmp_path, bar_reader, capsys, monkeypatch):
    require_real_data()
    from benchmarks import robustness as benchmark

    path = tmp_path / "reader.keras"
    bar_reader.save(path)
    monkeypatch.setattr(sys, "argv", ["robustness.py", "-c", str(ROOT / "configs" / "smoke.yaml"), "--set",
                                      f"data.cache_dir={tmp_path / 'cache'}", "--model", str(path), "--baseline",
                                      "--baseline-epochs", "1", "--n", "100"])
    benchmark.main()
    lines = capsys.readouterr().out.splitlines()
    assert "| corruption | family | keras-convnet | reader |" in lines
    assert any(line.startswith("100 test digits (seed 0)") for line in lines)
    rows = [line for line in lines if line.startswith("| ") and "family" not in line]
    assert len(rows) == len(corruptions.names()) + 5


@pytest.mark.integration
def test_the_benchmark_scores_validation_digits_with_split_val(tmp_path, bar_reader, capsys, monkeypatch):
    """``--split val`` corrupts digits drawn from the validation split (to decide on), never the test set's;
    the baseline, trained on the validation digits too, is refused there."""
    require_real_data()
    from benchmarks import robustness as benchmark

    path = tmp_path / "reader.keras"
    bar_reader.save(path)
    drawn = []
    monkeypatch.setattr(benchmark, "stratified_subset", lambda x, y, n, seed: drawn.append(x) or (x[:n], y[:n]))
    argv = ["robustness.py", "-c", str(ROOT / "configs" / "smoke.yaml"), "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--n", "50", "--split", "val"]
    monkeypatch.setattr(sys, "argv", [*argv, "--model", str(path)])
    benchmark.main()
    cfg = benchmark.load_config([str(ROOT / "configs" / "smoke.yaml")], [f"data.cache_dir={tmp_path / 'cache'}"])
    splits = benchmark.make_splits(cfg.data, cfg.seed)
    assert len(drawn) == 1 and np.array_equal(drawn[0], splits.x_val)
    assert any(line.startswith("50 validation digits (seed 0)") for line in capsys.readouterr().out.splitlines())
    monkeypatch.setattr(sys, "argv", [*argv, "--baseline"])
    with pytest.raises(SystemExit):
        benchmark.main()
    assert "--baseline trains on the validation digits too" in capsys.readouterr().err
