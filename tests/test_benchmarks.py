"""The CPU benchmarks run end to end at smoke size and print what the README says they print."""
import json
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_real_data, run_benchmark_main

pytestmark = pytest.mark.integration


def run_benchmark(script: str, *args: str, cache: Path) -> list[dict]:
    """``benchmarks/<script> -c configs/smoke.yaml ARGS`` (in this process); its JSON lines."""
    require_real_data()
    out = run_benchmark_main(script, "-c", "configs/smoke.yaml", "--set", f"data.cache_dir={cache}", *args)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("on_device, rounds", [(False, 1), (True, 3)])  # the median taken once, over 3 rounds
def test_input_bound_reports_three_rates_and_a_share(tmp_path, on_device, rounds):
    rows = run_benchmark("input_bound.py", "--steps", "2", "--rounds", str(rounds),
                         "--set", f"train.data_on_device={on_device}", cache=tmp_path / "cache")
    assert [row["what"] for row in rows] == ["input_only", "model_only", "fit"] * rounds + ["summary"]
    assert all(row["data_on_device"] is on_device for row in rows)
    assert all(row["images_per_s"] > 0 for row in rows[:-1])
    summary = rows[-1]
    for what in ("input_only", "model_only", "fit"):  # the median of the rounds
        assert summary[f"{what}_images_per_s"] == sorted(r["images_per_s"] for r in rows if r["what"] == what)[rounds // 2]
    assert summary["input_share"] == pytest.approx(1 - summary["fit_images_per_s"] / summary["model_only_images_per_s"])
    assert summary["bound_by"] == ("model" if summary["input_share"] < 0.1 else "input")


def test_train_speed_times_the_default_with_the_finer_check(tmp_path):
    rows = run_benchmark("train_speed.py", "--skip-baseline", "--check-every", "2", cache=tmp_path / "cache")
    (row,) = rows
    assert row["model"] == "mnist99" and row["epochs_run"] >= 1 and row["data_on_device"] is False
    assert row["val_checks"] >= 1  # checked every 2 steps (smoke: 8 steps an epoch), never reaching 99%
    assert row["seconds_to_val_99"] is None and 0 <= row["test_accuracy"] <= 1


@pytest.mark.slow
def test_ensemble_spread_scores_every_subset_of_the_matching_members(smoke_cfg, tmp_path, store):
    """Two members of one ensemble match; a train run with another seed (so another validation split)
    does not. The one pair is the ensemble the ensemble stage logged; each member alone is a 1-subset."""
    import mlflow

    from mnist99.config import with_overrides
    from mnist99.stages import ensemble, train

    cfg = with_overrides(smoke_cfg, {"ensemble.size": 2, "tracking.system_metrics": False})
    ensemble.run(cfg)
    train.run(with_overrides(cfg, {"seed": 9}))

    def spread(size: int) -> dict:  # in this process: the members are in its store already
        out = run_benchmark_main("ensemble_spread.py", "-c", "configs/smoke.yaml", "--size", str(size),
                                 "--set", f"data.cache_dir={tmp_path / 'cache'}")
        return json.loads(out.strip().splitlines()[-1])

    pairs, singles = spread(2), spread(1)
    (logged,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string="tags.`mnist99.stage` = 'ensemble'")
    member_ids = set(logged.data.tags["mnist99.member_run_ids"].split(","))
    assert {m["run_id"] for m in pairs["members"]} == member_ids  # the seed-9 run is left out
    assert pairs["subsets"] == 1 and singles["subsets"] == 2
    for split in ("val", "test"):
        assert pairs[f"{split}_accuracy"]["median"] == pytest.approx(logged.data.metrics[f"{split}_accuracy"])
        alone = sorted(m[f"{split}_accuracy"] for m in pairs["members"])
        assert [singles[f"{split}_accuracy"][k] for k in ("min", "max")] == pytest.approx(alone)
    # two pools of one config: the same pair, once from each side (a seed is never taken twice)
    mixed = json.loads(run_benchmark_main("ensemble_spread.py", "-c", "configs/smoke.yaml", "--pool", "", "--pool", "",
                                          "--set", f"data.cache_dir={tmp_path / 'cache'}").strip().splitlines()[-1])
    assert mixed["size"] == 2 and mixed["subsets"] == 2 and len(mixed["members"]) == 4
    assert mixed["val_accuracy"]["min"] == mixed["val_accuracy"]["max"] == pairs["val_accuracy"]["median"]
    # the same store again through --store: four members, but each seed once per ensemble, so the one
    # pair four times over (each seed from either store), never a seed with itself
    union = json.loads(run_benchmark_main("ensemble_spread.py", "-c", "configs/smoke.yaml", "--size", "2", "--store", store,
                                          "--set", f"data.cache_dir={tmp_path / 'cache'}").strip().splitlines()[-1])
    assert len(union["members"]) == 4 and union["subsets"] == 4
    assert union["val_accuracy"]["min"] == union["val_accuracy"]["max"] == pairs["val_accuracy"]["median"]


def test_ensemble_spread_mixes_one_member_per_pool_never_a_seed_twice():
    from benchmarks.ensemble_spread import mixed_subsets

    assert mixed_subsets([["1", "2"], ["2", "3"]]) == [((0, 0), (1, 0)), ((0, 0), (1, 1)), ((0, 1), (1, 1))]
    assert mixed_subsets([["1"], ["1"]]) == []
    assert len(mixed_subsets([[str(s) for s in range(1, 10)]] * 3)) == 9 * 8 * 7


def test_ensemble_spread_takes_any_members_of_several_stores_never_a_seed_twice():
    from benchmarks.ensemble_spread import union_subsets

    assert union_subsets([["1", "2"], ["2", "3"]], 2) == [((0, 0), (0, 1)), ((0, 0), (1, 0)), ((0, 0), (1, 1)),
                                                         ((0, 1), (1, 1)), ((1, 0), (1, 1))]
    assert union_subsets([["1"], ["1"]], 2) == []
    assert len(union_subsets([[str(s) for s in range(1, 10)]], 3)) == 84


def test_inference_measures_every_runtime_and_its_parity(tmp_path, tiny_members, capsys):
    """Smoke size (256 test digits, a few timed calls, no serving): one line per runtime, a summary."""
    require_real_data()
    from benchmarks import inference
    from mnist99.delivery.ensemble import combine

    combine(tiny_members, [0.3, 0.7]).save(tmp_path / "ensemble.keras")
    argv = ["inference.py", "-c", "configs/smoke.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--model", str(tmp_path / "ensemble.keras"), "--repeats", "2", "--samples", "3", "--warmup", "1",
            "--serve-requests", "0"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.chdir(ROOT)
        inference.main()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [row.get("runtime", row["result"]) for row in rows] == ["keras", "saved_model", "onnx", "litert", "summary"]
    *runtimes, summary = rows
    for row in runtimes:
        assert row["images_per_s"] > 0 and 0 < row["latency_ms_p50"] <= row["latency_ms_p95"], row["runtime"]
        assert row["max_abs_diff"] <= 1e-4 and row["argmax_agreement"] == 1.0, row["runtime"]
        assert row["test_accuracy"] == runtimes[0]["test_accuracy"], row["runtime"]
    assert runtimes[0]["paths"].keys() == {"eager", "tf.function"} and runtimes[3]["custom_ops"] == []
    assert summary["test_digits"] == 256 and summary["speed"]["onnx"]["images_per_s"] == round(
        runtimes[2]["images_per_s"], 1)


def test_post_load_stops_at_its_request_count_or_its_time_limit():
    """The serving client against a stub HTTP server: one warm-up, then at most N requests or S seconds."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks.inference import post_load

    answered = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the name http.server calls
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answered.append(len(body["inputs"]))
            reply = json.dumps({"predictions": [[0.1] * 10] * len(body["inputs"])}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Stub) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/invocations"
        row, answer = post_load(url, json.dumps({"inputs": [[[0] * 28] * 28] * 2}).encode(), requests=5, seconds=60)
        assert row["requests"] == 5 and answered == [2] * 6 and answer == [[0.1] * 10] * 2
        assert row["requests_per_s"] > 0 and 0 < row["latency_ms_p50"] <= row["latency_ms_p95"]
        start = time.monotonic()
        row, _ = post_load(url, json.dumps({"inputs": [[[0] * 28] * 28]}).encode(), requests=10**9, seconds=0.3)
        assert time.monotonic() - start < 5 and 0 < row["requests"] < 10**9
        server.shutdown()
