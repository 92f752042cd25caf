"""BatchNorm folded into the layer before it: the same function, the BatchNorm layers gone where they can go."""
import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.delivery.ensemble import average, combine
from mnist99.models import build_model
from mnist99.models.folding import fold_batchnorm
from mnist99.models.layers import leaf_layers
from mnist99.models.twin import serving_twin


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def trained_looking(model: keras.Model, seed: int = 0) -> keras.Model:
    """``model`` with BatchNorm statistics and affine weights far from their initial 0 and 1, as after training."""
    rng = np.random.default_rng(seed)
    for bn in batchnorms(model):
        shape = bn.moving_mean.shape
        bn.moving_mean.assign(rng.normal(0, 0.5, shape))
        bn.moving_variance.assign(rng.uniform(0.2, 3.0, shape))
        if bn.scale:
            bn.gamma.assign(rng.uniform(0.3, 1.7, shape))
        if bn.center:
            bn.beta.assign(rng.normal(0, 0.3, shape))
    return model


def outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(x))


@pytest.mark.parametrize("configs", [["default"], ["mlp", "mlp-cpu"]])  # the MLP's recipe at CPU width: the same layers
def test_a_packaged_model_folds_every_batchnorm_and_computes_the_same(configs):
    net = trained_looking(serving_twin(build_model(load_config(configs).model)))
    folded = fold_batchnorm(net)
    x = np.random.default_rng(1).uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    assert batchnorms(net) and not batchnorms(folded)
    # float32 sums in another order: the MLP's 1024-wide layers differed by up to 1.2e-5 on one draw of weights
    np.testing.assert_allclose(outputs(folded, x), outputs(net, x), atol=5e-5)
    assert all(layer.use_bias for layer in leaf_layers(folded) if isinstance(layer, keras.layers.Conv2D))


def test_only_what_computes_the_same_is_folded():
    image = keras.Input((8, 8, 2))
    shared = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(image)
    kept_1 = keras.layers.BatchNormalization(name="after_shared")(shared)  # the conv's output also feeds the Add
    activated = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="activated")(image)
    kept_2 = keras.layers.BatchNormalization(name="after_relu")(activated)
    added = keras.layers.Add(name="add")([kept_1, kept_2, shared])
    kept_3 = keras.layers.BatchNormalization(name="after_add")(added)
    plain = keras.layers.Conv2D(4, 1, use_bias=True, name="with_bias")(kept_3)
    gone = keras.layers.BatchNormalization(center=False, scale=False, name="gone")(plain)
    net = trained_looking(keras.Model(image, keras.layers.GlobalAveragePooling2D()(gone)))
    folded = fold_batchnorm(net)
    assert sorted(bn.name for bn in batchnorms(folded)) == ["after_add", "after_relu", "after_shared"]
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(outputs(folded, x), outputs(net, x), atol=1e-5)
    assert fold_batchnorm(folded) is folded  # nothing left to fold: the model itself


def test_a_model_without_batchnorm_is_returned_as_it_is():
    net = build_model(load_config(["default"], ["model.name=convnet"]).model)
    assert fold_batchnorm(net) is net


def test_the_combined_ensemble_serves_folded_members_that_average_as_the_members_do(tmp_path):
    cfg = load_config(["default"])
    members = [trained_looking(build_model(cfg.model), seed) for seed in (3, 4)]  # as trained: fused BatchNorm
    ensemble = combine(members)
    assert not batchnorms(ensemble)
    digits = np.random.default_rng(5).integers(0, 256, (32, 28, 28), dtype=np.uint8)
    unit = (digits / 255.0).astype("float32")[..., None]
    expected = average([outputs(serving_twin(m), unit) for m in members])
    np.testing.assert_allclose(outputs(ensemble, digits), expected, atol=1e-5)
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(outputs(loaded, digits), expected, atol=1e-5)
