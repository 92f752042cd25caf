"""The geometric ops as one resampling (augment.compose): the same draws and geometry as Keras' four
layers in a row, less blur, in tf.data and in a saved config."""
import keras
import numpy as np
import pytest

from mnist99.config import defaults
from mnist99.data.affine import ComposedAffine
from mnist99.data.augment import ElasticDistortion, build_augmenter
from mnist99.data.batches import make_dataset


def blobs(n: int = 64) -> np.ndarray:
    """A 3x3 white square at a different place in each image."""
    x = np.zeros((n, 28, 28, 1), "float32")
    rng = np.random.default_rng(0)
    for i in range(n):
        r, c = rng.integers(6, 20, 2)
        x[i, r:r + 3, c:c + 3] = 1.0
    return x


def centres(images) -> np.ndarray:
    im = np.asarray(images)[..., 0]
    rows, cols = np.mgrid[:28, :28]
    ink = im.sum((1, 2))
    return np.stack([(im * rows).sum((1, 2)) / ink, (im * cols).sum((1, 2)) / ink], 1)


def augmenters(seed: int = 7):
    cfg = defaults().augment
    return (build_augmenter(cfg.model_copy(update={"compose": False}), seed),
            build_augmenter(cfg.model_copy(update={"compose": True}), seed))


def test_compose_replaces_the_four_layers_by_one():
    apart, together = augmenters()
    assert [type(layer).__name__ for layer in apart.layers] == [
        "RandomRotation", "RandomTranslation", "RandomZoom", "RandomShear"]
    assert [type(layer).__name__ for layer in together.layers] == ["ComposedAffine"]


def test_one_resampling_moves_each_digit_where_the_four_layers_move_it():
    """Same seeds, same draws: every square lands where Keras' layers in a row put it (to a tenth of a pixel,
    the difference of one bilinear pass and four), and they move it 1.5 px on average; a wrong order or
    sign of the matrices misplaces them by pixels."""
    apart, together = augmenters()
    x = blobs()
    moved = np.abs(centres(apart(x, training=True)) - centres(x)).mean()
    assert moved > 0.5
    apart, together = augmenters()  # fresh seed generators: the first draws again
    gap = np.abs(centres(apart(x, training=True)) - centres(together(x, training=True)))
    assert gap.max() < 0.25, gap.max()


def test_one_resampling_blurs_less_than_four():
    apart, together = augmenters()
    x = blobs()
    sharp = lambda images: float((np.asarray(images) > 0.9).sum())  # noqa: E731
    assert sharp(together(x, training=True)) > 1.5 * sharp(apart(x, training=True))


def test_images_pass_through_at_inference():
    _, together = augmenters()
    x = blobs(4)
    np.testing.assert_array_equal(np.asarray(together(x, training=False)), x)


def test_in_tf_data_each_batch_draws_its_own():
    _, together = augmenters()
    x = np.zeros((64, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = 255
    ds = make_dataset(x, np.zeros(64, int), 16, training=True, augmenter=together, seed=1)
    flat = np.stack([np.asarray(images).ravel() for images, _ in ds])
    assert len(flat) == 4 and len({row.tobytes() for row in flat}) == 4


def test_config_round_trip_and_refusal_of_other_layers():
    """(Without shear: Keras 3.15's RandomShear refuses its own saved factor, (-0.1, 0.1).)"""
    layer = ComposedAffine([keras.layers.RandomRotation(0.03), keras.layers.RandomTranslation(0.1, 0.1),
                            keras.layers.RandomZoom(0.1, 0.1)])
    again = ComposedAffine.from_config(layer.get_config())
    assert [type(x) for x in again.composed] == [type(x) for x in layer.composed]
    assert again.composed[1].height_factor == 0.1
    with pytest.raises(ValueError, match="RandomContrast"):
        ComposedAffine([keras.layers.RandomContrast(0.5)])


def elastic(alpha: float = 34.0, seed: int = 3) -> ElasticDistortion:
    return ElasticDistortion(alpha, 4.0, 1.0, seed=seed)


def four(seed: int = 7) -> list:
    _, together = augmenters(seed)
    return together.layers[0].composed


def test_compose_folds_the_elastic_distortion_into_the_same_resampling():
    cfg = defaults().augment.model_copy(deep=True, update={"compose": True})
    cfg.elastic.enabled = True
    augmenter = build_augmenter(cfg, 7)
    assert [type(layer).__name__ for layer in augmenter.layers] == ["ComposedAffine"]
    assert [type(layer).__name__ for layer in augmenter.layers[0].composed] == [
        "RandomRotation", "RandomTranslation", "RandomZoom", "RandomShear", "ElasticDistortion"]


def test_a_zero_field_resamples_as_the_matrices_alone():
    """The dense sampler reads the input where Keras' affine_transform reads it (pixel centres, order of the
    matrices, black beyond the edge): with alpha 0 the two outputs agree to float rounding."""
    x = blobs()
    alone = ComposedAffine(four())(x, training=True)
    folded = ComposedAffine([*four(), elastic(alpha=0.0)])(x, training=True)
    np.testing.assert_allclose(np.asarray(folded), np.asarray(alone), atol=1e-4)


def test_without_matrices_the_field_moves_as_the_elastic_layer_alone():
    x = blobs()
    still = keras.layers.RandomTranslation((0.0, 0.0), (0.0, 0.0), seed=1)
    folded = ComposedAffine([still, elastic()])(x, training=True)
    np.testing.assert_allclose(np.asarray(folded), np.asarray(elastic()(x, training=True)), atol=1e-5)


def test_folding_the_field_blurs_less_than_a_fifth_resampling():
    x = blobs()
    sharp = lambda images: float((np.asarray(images) > 0.9).sum())  # noqa: E731
    apart = elastic()(ComposedAffine(four())(x, training=True), training=True)
    folded = ComposedAffine([*four(), elastic()])(x, training=True)
    assert sharp(folded) > 1.2 * sharp(apart), (sharp(folded), sharp(apart))
    moved = lambda images: np.abs(centres(images) - centres(x)).mean()  # noqa: E731
    assert abs(moved(folded) - moved(apart)) < 0.25  # the same draws: the digits land in the same places


def test_the_folded_field_runs_in_tf_data_and_round_trips():
    layer = ComposedAffine([keras.layers.RandomRotation(0.03), elastic()])
    again = ComposedAffine.from_config(layer.get_config())
    assert [type(x).__name__ for x in again.composed] == ["RandomRotation", "ElasticDistortion"]
    assert again.composed[1].alpha == 34.0
    with pytest.raises(ValueError, match="ElasticDistortion there"):
        ComposedAffine([elastic(), keras.layers.RandomRotation(0.03)])
    x = np.zeros((32, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = 255
    ds = make_dataset(x, np.zeros(32, int), 16, training=True, augmenter=keras.Sequential([layer]), seed=1)
    flat = np.stack([np.asarray(images).ravel() for images, _ in ds])
    assert len({row.tobytes() for row in flat}) == 2 and flat.max() > 0.5
