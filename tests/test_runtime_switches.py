"""The GPU-oriented switches (mixed precision, XLA, strategy) build and train correctly on the CPU too."""
import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.models.precision import mixed_layers
from mnist99.training.augmented_net import net_of
from mnist99.training.fit import distribution_strategy, train_model
from mnist99.training.recipe import resolve_data_on_device, resolve_jit


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mixed, jit", [
    (True, False),
    ("bfloat16", False),
    pytest.param(False, True, marks=pytest.mark.slow),  # XLA compiles slowly on CPU
    pytest.param(True, True, marks=pytest.mark.slow),
])
def test_mixed_precision_and_xla_train_a_step(tiny_splits, mixed, jit):
    cfg = load_config([], ["model.width=4", "model.depth=1", "train.epochs=1", "train.batch_size=50",
                           f"train.mixed_precision={mixed}", f"train.jit_compile={jit}", "train.verbose=0",
                           "augment.enabled=false"])
    seen = {}

    class Dtypes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["fit"] = {layer.compute_dtype for layer in net_of(self.model).layers}

    result = train_model(cfg, tiny_splits, callbacks=[Dtypes()])
    assert np.isfinite(result.history["loss"][0])
    assert result.model.output.dtype == "float32"  # softmax stays float32 under mixed_float16
    if mixed:  # trained in 16 bits, handed back (to be scored, saved, exported) in float32
        half = "bfloat16" if mixed == "bfloat16" else "float16"
        assert half in seen["fit"] and mixed_layers(result.model) == []
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy does not outlive the build
    probs = result.model.predict(tiny_splits.x_val[:4, ..., None] / 255.0, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


def test_auto_settings_follow_the_hardware():
    """Every ``auto`` follows what the backend sees: XLA, the images on the device and MirroredStrategy
    (several GPUs) on this machine's hardware; explicit settings win."""
    import tensorflow as tf

    from mnist99.training.devices import gpu_names, has_gpu

    assert resolve_jit("auto") is has_gpu()
    assert resolve_data_on_device("auto", 47 * 2**20) is has_gpu()
    several = len(gpu_names()) > 1
    assert isinstance(distribution_strategy("auto"), tf.distribute.MirroredStrategy) is several
    assert resolve_jit(True) is True and resolve_jit(False) is False
    assert isinstance(distribution_strategy("mirrored"), tf.distribute.MirroredStrategy)
    assert not isinstance(distribution_strategy("none"), tf.distribute.MirroredStrategy)


def test_auto_settings_turn_on_with_a_gpu(monkeypatch):
    """With a GPU seen (faked here: the probe answers yes), ``auto`` turns XLA and the on-device images on."""
    from mnist99.training import recipe

    monkeypatch.setattr(recipe, "has_gpu", lambda: True)
    assert recipe.resolve_jit("auto") is True
    assert recipe.resolve_data_on_device("auto", 47 * 2**20) is True
    assert recipe.resolve_data_on_device("auto", recipe.DEVICE_DATA_LIMIT_BYTES + 1) is False
    monkeypatch.setattr(recipe, "has_gpu", lambda: False)
    assert recipe.resolve_jit("auto") is False and recipe.resolve_data_on_device("auto", 1) is False


def test_ema_validates_on_averaged_weights(tiny_splits):
    cfg = load_config([], ["model.name=resmlp", "model.width=16", "model.depth=1", "train.epochs=2",
                           "train.batch_size=20", "train.optimizer.ema=0.9", "train.verbose=0",
                           "augment.enabled=false"])
    result = train_model(cfg, tiny_splits)
    assert result.model.optimizer.use_ema
    assert np.isfinite(result.metrics["val_loss"])


@pytest.mark.slow
def test_gpu_config_trains_on_the_cpu_too(tiny_splits):
    """configs/gpu.yaml (mixed precision, bigger batch, scaled lr) at tiny size: it must at least work here."""
    from pathlib import Path

    gpu = Path(__file__).resolve().parents[1] / "configs" / "gpu.yaml"
    cfg = load_config([gpu], ["model.width=4", "model.depth=1", "train.epochs=1", "train.verbose=0",
                              "augment.enabled=false"])
    assert cfg.train.mixed_precision and cfg.train.batch_size == 512 and cfg.train.optimizer.lr == 0.008
    result = train_model(cfg, tiny_splits)
    assert np.isfinite(result.history["loss"][0]) and result.model.output.dtype == "float32"
