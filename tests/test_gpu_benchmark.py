"""benchmarks/gpu.py: mnist99's recipe on any Keras backend (the lent GPU machines have JAX, no TensorFlow)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import require_real_data, run_benchmark_main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_config_and_recipe_load_without_tracking_tuning_or_tf_data():
    """What benchmarks/gpu.py imports must not pull in MLflow, KerasTuner or the tf.data modules."""
    code = (
        "import sys\n"
        "from mnist99.config import load_config\n"
        "load_config(['configs/default.yaml', 'configs/gpu.yaml'])\n"
        "import mnist99.data.augment, mnist99.data, mnist99.delivery.ensemble, mnist99.training.callbacks\n"
        "import mnist99.training.recipe\n"
        "print([m for m in ('mlflow', 'keras_tuner', 'mnist99.data.batches', 'mnist99.training.fit',"
        " 'mnist99.tracking') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_gpu_benchmark_trains_scores_and_times_an_ensemble(tmp_path):
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    run_benchmark_main("gpu.py", "-c", "configs/smoke.yaml", "--baseline-epochs", "1", "--check-every", "2",
                       "--out", str(out), "--set", f"data.cache_dir={tmp_path / 'cache'}")
    rows = {row["result"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == ["baseline", "member_1", "member_2", "ensemble", "inference"]
    assert rows["member_1"]["seed"] == 1 and rows["member_2"]["seed"] == 2
    assert rows["member_1"]["val_checks"] > 0  # the every-2-steps check ran
    ensemble = rows["ensemble"]
    assert ensemble["members"] == 2 and ensemble["tta_views"] == 1  # ensemble.tta_shifts_alone: one member only
    assert ensemble["member_2_test_accuracy"] == rows["member_2"]["test_accuracy"]
    assert 0.0 <= ensemble["test_accuracy"] <= 1.0 and 0.0 <= ensemble["disagreement"] <= 1.0
    assert rows["inference"]["images_per_s"] > 0 and rows["inference"]["latency_ms_p50"] > 0


@pytest.mark.slow
def test_gpu_benchmark_fits_members_into_a_budget(tmp_path):
    """``--set train.budget``: a probe, a plan (one JSON line), members of the planned epochs under their
    deadlines, the share of the budget used; a budget with the baseline is refused in one line."""
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    # a budget ample for the smoke members on a busy machine, capped at 6 epochs each so that it ends soon
    common = ["-c", "configs/smoke.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.budget=3m",
              "--set", "train.budget_max_epochs=6"]
    printed = run_benchmark_main("gpu.py", *common, "--skip-baseline", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["result"] for row in rows][0] == "plan" and [row["result"] for row in rows][-2:] == ["ensemble", "inference"]
    plan, members, ensemble = rows[0], rows[1:-2], rows[-2]
    assert plan["budget"] == 180 and plan["capped"] and len(members) == len(plan["fit_epochs"]) == ensemble["members"]
    # each member's schedule is the plan's (with its headroom), compressed by the deadline where fewer fit
    assert [m["planned_epochs"] for m in members] == plan["epochs"]
    assert all(m["epochs_run"] <= m["planned_epochs"] for m in members)
    assert ensemble["budget_seconds"] == 180 and ensemble["budget_used"] == pytest.approx(ensemble["wall_seconds"] / 180)
    assert "gpu.py: budget 3m: " in printed and "capped by train.budget_max_epochs=6" in printed and " used (" in printed
    with pytest.raises(SystemExit, match="a budget times the ensemble alone; add --skip-baseline"):
        run_benchmark_main("gpu.py", *common)


def run_under_jax(args: list[str]) -> subprocess.CompletedProcess:
    """``python ARGS`` from the checkout's root under Keras' JAX backend (the lent GPU machines have no TensorFlow)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_gpu_benchmark_scores_an_ensemble_of_one_through_its_test_time_shifts(tmp_path):
    """As the ensemble stage does (and a budget's plan prices): one member is scored, combined and timed
    averaged over ensemble.tta_shifts_alone's 4 shifted copies of each digit."""
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    printed = run_benchmark_main("gpu.py", "-c", "configs/smoke.yaml", "--skip-baseline", "--set", "ensemble.size=1",
                                 "--out", str(out), "--set", f"data.cache_dir={tmp_path / 'cache'}")
    rows = {row["result"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["ensemble"]["members"] == 1 and rows["ensemble"]["tta_views"] == 5, printed


@pytest.mark.slow
def test_gpu_benchmark_fits_a_budget_under_jax(tmp_path):
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    # a budget ample for the smoke members, capped at 6 epochs each so that it ends soon on any machine
    run_under_jax(["benchmarks/gpu.py", "-c", "configs/smoke.yaml", "--skip-baseline", "--set", "train.budget=3m",
                   "--set", "train.budget_max_epochs=6", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["backend"] for row in rows} == {"jax"}
    assert rows[0]["result"] == "plan" and [row["result"] for row in rows][-2:] == ["ensemble", "inference"]
    assert rows[0]["capped"] and rows[0]["epochs"] == [6, 6] and rows[-2]["budget_seconds"] == 180
    assert [m["planned_epochs"] for m in rows[1:-2]] == [6, 6] and all(m["epochs_run"] == 6 for m in rows[1:-2])


@pytest.mark.slow
def test_the_batchnorm_refresh_sets_the_statistics_under_jax_too():
    """gpu.py's members refresh their BatchNorm statistics as mnist99's do: eager training-mode calls whose
    moving averages JAX keeps (the mean of a constant image's batches is that image's value)."""
    code = (
        "import keras, numpy as np\n"
        "from mnist99.training.batchnorm import refresh_statistics\n"
        "inputs = keras.Input((28, 28, 1))\n"
        "bn = keras.layers.BatchNormalization(momentum=0.9)\n"
        "net = keras.Model(inputs, bn(inputs))\n"
        "images = np.full((64, 28, 28), 51, 'uint8')\n"
        "print(keras.config.backend(), refresh_statistics(net, images, 3, 16, 0), bn.momentum,\n"
        "      float(keras.ops.convert_to_numpy(bn.moving_mean)[0]))\n"
    )
    backend, batches, momentum, mean = run_under_jax(["-c", code]).stdout.split()[-4:]
    assert (backend, batches, momentum) == ("jax", "3", "0.9") and float(mean) == pytest.approx(0.2)


@pytest.mark.slow
def test_a_deadline_compresses_the_schedule_under_jax_too():
    """JAX's compiled step reads only the variables it is handed: the warp's are tracked by the optimiser,
    so a fit that fits fewer epochs still runs the schedule's last rates (the weight sums the rates used)."""
    code = (
        "import keras, numpy as np\n"
        "from mnist99.training.callbacks import BudgetDeadline\n"
        "clock = [0.0]\n"
        "class Takes(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None): clock[0] += [10, 10, 15, 12.5, 12.5][epoch]\n"
        "base = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=20, alpha=0.01)\n"
        "model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer='zeros')])\n"
        "model.compile(keras.optimizers.SGD(base), loss=lambda y, p: keras.ops.mean(p), jit_compile=True)\n"
        "guard = BudgetDeadline(allowance=53.75, clock=lambda: clock[0])\n"
        "model.fit(np.ones((8, 1)), np.zeros((8, 1)), batch_size=2, epochs=5, verbose=0, shuffle=False,\n"
        "          callbacks=[Takes(), guard])\n"
        "print(keras.config.backend(), guard.stopped_after, guard.compressed,\n"
        "      -float(keras.ops.convert_to_numpy(model.layers[0].kernel)[0, 0]))\n"
    )
    backend, stopped, compressed, weight = run_under_jax(["-c", code]).stdout.split()[-4:]
    base = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=20, alpha=0.01)
    # as under TensorFlow (tests/test_budget.py): steps 0-11 as built, then the last 8 of the schedule in 6 steps
    compressed_rates = [float(base(s)) for s in [*range(12), *(12 + k * 8 / 6 for k in range(6))]]
    assert (backend, stopped, compressed) == ("jax", "4.5", "True")
    assert float(weight) == pytest.approx(sum(compressed_rates), rel=1e-5)
    assert float(weight) != pytest.approx(sum(float(base(s)) for s in range(18)), rel=1e-3)  # not the uncompressed run


@pytest.mark.slow
def test_a_budgets_probe_compiles_every_step_its_members_run_whatever_their_epochs(tmp_path):
    """Under JAX, with a compilation cache: the probe's net and members of other epochs (stretchable
    schedules) compile one set of train, test and predict steps, so the members compile none, and the
    probe's warm start (a second net) is far below its own cold one."""
    code = (
        "import os, sys, time, jax, numpy as np\n"
        f"jax.config.update('jax_compilation_cache_dir', {str(tmp_path)!r})\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "import gpu\n"
        "from mnist99.config import load_config\n"
        "steps = lambda: sorted(f for f in os.listdir(sys.argv[1]) if f.split('-')[0].endswith('_step'))\n"
        "rng = np.random.default_rng(0)\n"
        "images, y = rng.integers(0, 256, (2200, 28, 28), dtype=np.uint8), np.eye(10)[rng.integers(0, 10, 2200)]\n"
        "x = images.astype('float32')[..., None] / 255\n"  # 31 batches of 64 and one of 16; validation: 3 and 8
        "data = {'images': images, 'x_train': x[:2000], 'y_train': y[:2000], 'x_val': x[2000:], 'y_val': y[2000:],\n"
        "        'x_test': x[:1100]}\n"
        "cfg = load_config(['configs/smoke.yaml'], ['train.epochs=24'])\n"
        "cold = gpu.probe(cfg, data).start_seconds\n"
        "warm = gpu.probe(cfg, data, warm_start=True).start_seconds; compiled = steps()\n"
        "for seed, epochs in [(1, 3), (2, 5)]:\n"
        "    member = cfg.model_copy(deep=True); member.seed, member.train.epochs = seed, epochs\n"
        "    net, _ = gpu.train_member(member, data, 0, stretchable=True)\n"
        "    [net.predict(data[split], batch_size=512, verbose=0) for split in ('x_val', 'x_test')]  # as main scores it\n"
        "print(len(compiled), steps() == compiled, cold, warm)\n"
    )
    count, same, cold, warm = run_under_jax(["-c", code, str(tmp_path)]).stdout.split()[-4:]
    # train: a full and a partial batch; test: validation's full and partial; predict: the validation split's
    # one batch (200: the probe's timed forward passes too), the test split's full and partial (512, 76)
    assert int(count) == 7
    assert same == "True"  # the members compiled nothing more
    assert float(warm) < float(cold) / 3


def test_gpu_benchmark_scores_a_mixed_precision_member_as_its_float32_twin():
    """As the ensemble stage does: a member trained under a mixed policy is scored and combined in float32."""
    import importlib

    from mnist99.config import load_config
    from mnist99.data.model_input import to_model_input
    from mnist99.models.precision import mixed_layers

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "benchmarks"))
        gpu = importlib.import_module("gpu")
    cfg = load_config([], ["model.width=4", "model.depth=1", "train.epochs=1", "train.batch_size=16",
                           "train.mixed_precision=bfloat16", "train.verbose=0", "train.batchnorm_refresh=0"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 28, 28), dtype=np.uint8)
    labels = keras.utils.to_categorical(rng.integers(0, 10, 48), 10)
    data = {"images": images, "x_train": to_model_input(images[:32]), "y_train": labels[:32],
            "x_val": to_model_input(images[32:]), "y_val": labels[32:]}
    net, result = gpu.train_member(cfg, data, 0)
    assert result["epochs_run"] == 1
    assert mixed_layers(net) == []  # the float32 twin, although the net it trained computed its convolutions in bfloat16
    assert net.predict(data["x_val"], verbose=0).shape == (16, 10)
    priced = []  # and its probe prices the forward passes of that twin, the net the members are scored as
    real = gpu.time_fit

    def spy(*args, net, **kwargs):
        priced.append(mixed_layers(net))
        return real(*args, net=net, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpu, "time_fit", spy)
        assert gpu.probe(cfg, data).image_seconds > 0
    assert priced == [[]]
