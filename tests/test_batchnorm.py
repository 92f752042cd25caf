"""BatchNorm statistics recomputed for the kept weights (mnist99.training.batchnorm), on small synthetic arrays."""
import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.data.model_input import to_model_input
from mnist99.errors import ConfigError
from mnist99.training.batchnorm import batchnorm_layers, refresh_statistics
from mnist99.training.fit import train_model


def conv_bn_net() -> keras.Model:
    """Two BatchNorm layers, the second inside a nested Sequential, as nets of blocks nest them."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.Sequential([keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization(momentum=0.95, name="bn2")],
                         name="block")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Dropout(0.5)(x)))


def per_batch_moments(net: keras.Model, images: np.ndarray, order: np.ndarray, batch: int):
    """The mean and variance of bn1's input over each batch, from a sub-model of the convolution alone."""
    conv = keras.Model(net.input, net.get_layer("conv").output)
    means, variances = [], []
    for k in range(len(order) // batch):
        features = np.asarray(conv(to_model_input(images[order[k * batch:(k + 1) * batch]])))
        means.append(features.mean(axis=(0, 1, 2)))
        variances.append(features.var(axis=(0, 1, 2)))
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_the_statistics_become_the_mean_of_the_batches_statistics_and_nothing_else_changes(tiny_splits):
    net = conv_bn_net()
    images = tiny_splits.x_train
    bn1 = net.get_layer("bn1")
    bn1.moving_mean.assign(np.full(4, 50.0, "float32"))  # stale statistics, far from the data's
    bn1.moving_variance.assign(np.full(4, 9.0, "float32"))
    weights = [keras.ops.convert_to_numpy(w) for w in net.trainable_weights]
    stale_bn2 = keras.ops.convert_to_numpy(net.get_layer("block").layers[1].moving_mean)

    assert refresh_statistics(net, images, batches=3, batch_size=40, seed=7) == 3

    order = np.random.default_rng(7).permutation(len(images))[:120]
    mean, variance = per_batch_moments(net, images, order, 40)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_mean), mean, rtol=1e-4, atol=1e-5)  # no trace of 50
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_variance), variance, rtol=1e-3, atol=1e-5)
    bn2 = net.get_layer("block").layers[1]
    assert not np.allclose(keras.ops.convert_to_numpy(bn2.moving_mean), stale_bn2)  # nested: refreshed too
    for before, after in zip(weights, net.trainable_weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert bn1.momentum == 0.9 and net.get_layer("block").layers[1].momentum == 0.95  # kept for saving


def test_a_net_without_batchnorm_and_too_few_images(tiny_splits, tiny_members):
    assert list(batchnorm_layers(tiny_members[0])) == []
    assert refresh_statistics(tiny_members[0], tiny_splits.x_train, 5, 40, 0) == 0
    assert refresh_statistics(conv_bn_net(), tiny_splits.x_train, 50, 40, 0) == 5  # 200 images: 5 batches of 40


@pytest.mark.parametrize("refresh", [0, 2])
def test_train_model_refreshes_the_kept_nets_statistics_when_asked(tiny_splits, monkeypatch, refresh):
    from mnist99.training import fit

    calls = []
    monkeypatch.setattr(fit, "refresh_statistics", lambda net, images, batches, size, seed: calls.append(
        (net, len(images), batches, size, seed)) or batches)
    cfg = load_config([], ["model.width=4", "model.depth=1", "train.epochs=1", "train.batch_size=50", "train.verbose=0",
                           "augment.enabled=false", f"train.batchnorm_refresh={refresh}", "seed=3"])
    result = train_model(cfg, tiny_splits)
    assert [call[1:] for call in calls] == ([(200, 2, 50, 3)] if refresh else [])
    if refresh:  # on the net as trained, before its serving twin takes its weights (statistics included)
        assert calls[0][0].name == result.model.name
        for ours, theirs in zip(result.model.get_weights(), calls[0][0].get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_the_refresh_is_validated_by_name():
    with pytest.raises(ConfigError, match="batchnorm_refresh"):
        load_config([], ["train.batchnorm_refresh=-1"])
