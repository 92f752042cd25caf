"""The images on the device (mnist99.training.augmented_net): the same net, trained from index batches."""
import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.data.batches import make_index_dataset
from mnist99.data.model_input import to_model_input
from mnist99.errors import ConfigError
from mnist99.training.augmented_net import AugmentedNet, DeviceImages, build_augmented_net, net_of
from mnist99.training.devices import has_gpu
from mnist99.training.fit import train_model
from mnist99.training.recipe import DEVICE_DATA_LIMIT_BYTES, resolve_data_on_device

TINY = ["model.name=resmlp", "model.width=32", "model.depth=1", "train.batch_size=20", "train.verbose=0"]


def test_device_images_gather_what_the_host_pipeline_gives():
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype("uint8")
    layer = DeviceImages(images)
    picked = np.array([7, 0, 49, 7])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(picked)), to_model_input(images[picked]).numpy())
    assert not layer.trainable_weights and layer.non_trainable_weights[0].dtype == "uint8"


def test_index_dataset_pairs_each_index_with_its_label():
    labels = np.arange(30) % 10
    batches = list(make_index_dataset(100, labels, 8, training=True, seed=3))
    indices = np.concatenate([i.numpy() for i, _ in batches])
    onehots = np.concatenate([y.numpy() for _, y in batches])
    assert len(indices) == 24 and len(set(indices)) == 24 and set(indices) <= set(range(100, 130))  # last partial batch dropped
    np.testing.assert_array_equal(onehots.argmax(axis=1), labels[indices - 100])


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("mixed, strategy", [(False, "none"), (True, "none"), (False, "mirrored")])
def test_data_on_device_trains_the_plain_net(tiny_splits, mixed, strategy):
    """Labels and images must stay paired through the index lookup: the bar's row is learned to >= 90%
    (also in mixed precision, and under MirroredStrategy, here with one replica)."""
    cfg = load_config([], TINY + ["train.epochs=8", "train.data_on_device=true", "augment.enabled=false",
                                  f"train.mixed_precision={mixed}", f"train.strategy={strategy}"])
    result = train_model(cfg, tiny_splits)
    assert result.metrics["val_accuracy"] >= 0.9 and result.metrics["test_accuracy"] >= 0.9
    net = result.model
    assert not isinstance(net, AugmentedNet) and net.input_shape == (None, 28, 28, 1)
    assert not any(isinstance(layer, DeviceImages) for layer in net._flatten_layers())
    probs = net.predict(tiny_splits.x_test[..., None] / 255.0, verbose=0)
    assert np.mean(probs.argmax(axis=1) == tiny_splits.y_test) == pytest.approx(result.metrics["test_accuracy"])


def test_checks_and_diagnostics_work_while_an_augmented_net_fits(tiny_splits):
    """The finer 99% check validates the wrapped model on index batches (fit's own validation data); the
    diagnostics probe the net's layers on images."""
    from mnist99.training import diagnostics

    cfg = load_config([], TINY + ["train.epochs=2", "train.data_on_device=true", "train.optimizer.ema=0.9"])
    logged = []
    diag = diagnostics.for_validation(cfg.diagnostics, tiny_splits, log_fn=lambda m, step: logged.append(m))
    result = train_model(cfg, tiny_splits, callbacks=[diag], check_every=3)
    clock = result.time_to_accuracy
    assert result.data_on_device and clock.checks >= 1  # 10 steps an epoch: checks at steps 3, 6, 9
    if clock.seconds is None:  # never reached 99%: checked at every third step of both epochs
        assert clock.checks == 6
    assert len(logged) == 2 and any(k.startswith("grad_norm") for k in logged[0])


def test_augmented_net_shares_the_nets_weights(tiny_splits):
    cfg = load_config([], TINY)
    keras.mixed_precision.set_global_policy("mixed_float16")
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    wrapped = build_augmented_net(cfg, net, tiny_splits.x_train)
    assert net_of(wrapped) is net and net_of(net) is net
    assert [id(v) for v in wrapped.trainable_weights] == [id(v) for v in net.trainable_weights]
    assert all(layer.compute_dtype == "float32" for layer in wrapped.augmenter.layers)  # resamples in float32
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # and the policy is left as it was


def test_data_on_device_setting():
    assert resolve_data_on_device("auto", 47 * 2**20) is has_gpu()
    assert resolve_data_on_device(True, 10) is True and resolve_data_on_device(False, 10) is False
    assert resolve_data_on_device("auto", DEVICE_DATA_LIMIT_BYTES + 1) is False
    with pytest.raises(ConfigError, match="data_on_device=true: 2.0 GiB"):
        resolve_data_on_device(True, DEVICE_DATA_LIMIT_BYTES + 1)


@pytest.mark.slow
def test_a_killed_fit_with_data_on_device_resumes_from_its_backup(tiny_splits, tmp_path):
    """The backup holds the net's weights and optimiser state, not the images; a rerun picks up after epoch 2."""

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    cfg = load_config([], TINY + ["train.epochs=4", "train.data_on_device=true", "train.early_stopping.enabled=false"])
    with pytest.raises(KeyboardInterrupt):
        train_model(cfg, tiny_splits, callbacks=[Crash()], backup_dir=tmp_path / "backup")
    import json

    import h5py

    committed = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["weights"]
    with h5py.File(tmp_path / "backup" / committed) as backup:
        assert len(backup["images/vars"]) == 0 and len(backup["layers"]) > 0  # images left out, the net kept
    result = train_model(cfg, tiny_splits, backup_dir=tmp_path / "backup")
    assert result.metrics["first_epoch"] == 3 and result.metrics["epochs_run"] == 4


@pytest.mark.parametrize("mixed", [False, True])
def test_a_mixed_float16_net_behind_its_float32_wrapper_trains_with_loss_scaling(tiny_splits, mixed):
    """Keras adds loss scaling only for a model whose own policy is mixed_float16; the wrapper is float32,
    so compile_model adds it: unscaled float16 gradients underflow."""
    from mnist99.models import build_model
    from mnist99.training.recipe import compile_model, configure_runtime, training_precision

    cfg = load_config([], TINY + [f"train.mixed_precision={mixed}"])
    configure_runtime(cfg)
    with training_precision(cfg):
        wrapped = compile_model(cfg, 1, model=build_augmented_net(cfg, build_model(cfg.model), tiny_splits.x_train))
    scaled = isinstance(wrapped.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled is mixed and wrapped.net.optimizer is wrapped.optimizer
