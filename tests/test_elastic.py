"""ElasticDistortion: Simard et al.'s smooth displacement fields, drawn apart for x and y, on the
chosen share of the images. Each check fails on Keras 3.15's RandomElasticTransform (speckle, x = y,
half the share)."""
import numpy as np
import pytest

from mnist99.data.augment import ElasticDistortion

GRID = np.arange(28, dtype="float32")


def field(n=32, seed=5, **kwargs):
    """The (rows, cols) displacement of every pixel of ``n`` images, read back from warped ramps.

    A ramp along the columns (value = column / 27) warps to (column + d_col) / 27, so it gives d_col;
    one along the rows gives d_row. Two fresh layers with one seed draw the same fields, so the two
    calls see the same displacements. The centre only: sampling past the edge reads black."""
    ramp = np.tile(GRID / 27, (28, 1))
    warped = {}
    for axis, image in (("cols", ramp), ("rows", ramp.T)):
        layer = ElasticDistortion(**{"alpha": 34.0, "sigma": 4.0, "probability": 1.0, **kwargs}, seed=seed)
        warped[axis] = np.asarray(layer(np.repeat(image[None, ..., None], n, 0), training=True))[..., 0] * 27
    d_rows = warped["rows"] - GRID[None, :, None]
    d_cols = warped["cols"] - GRID[None, None, :]
    return d_rows[:, 9:19, 9:19], d_cols[:, 9:19, 9:19]


def test_the_same_seed_draws_the_same_field():
    np.testing.assert_allclose(field(seed=2)[0], field(seed=2)[0])
    assert not np.allclose(field(seed=2)[0], field(seed=3)[0])


def test_the_field_is_smooth_a_few_pixels_and_independent_per_axis():
    d_rows, d_cols = field()
    for d in (d_rows, d_cols):
        assert 0.5 < d.std() < 3.0, d.std()  # Simard's alpha 34, sigma 4: about 1.4 px
        neighbours = np.corrcoef(d[:, :, :-1].ravel(), d[:, :, 1:].ravel())[0, 1]
        assert neighbours > 0.9, neighbours  # a smooth field, not speckle
    assert abs(np.corrcoef(d_rows.ravel(), d_cols.ravel())[0, 1]) < 0.3  # not along the diagonal


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_probability_is_the_share_of_images_distorted(probability):
    d_rows, _ = field(n=400, probability=probability)
    moved = (np.abs(d_rows).max(axis=(1, 2)) > 1e-3).mean()
    assert abs(moved - probability) < 0.08, moved


def test_the_config_round_trips():
    layer = ElasticDistortion(20.0, 3.0, 0.25, seed=4)
    again = ElasticDistortion.from_config(layer.get_config())
    assert (again.alpha, again.sigma, again.factor) == (20.0, 3.0, (0.25, 0.25))


def test_it_runs_in_tf_data_with_an_unknown_batch_size():
    """tf.data gives the map an unknown batch size (the last batch is short); Keras' layer needed a static one."""
    import tensorflow as tf

    layer = ElasticDistortion(34.0, 4.0, 1.0, seed=1)
    x = np.zeros((40, 28, 28, 1), np.float32)
    x[:, 8:20, 12:16] = 1.0
    batches = [np.asarray(b) for b in tf.data.Dataset.from_tensor_slices(x).batch(16).map(
        lambda b: layer(b, training=True))]
    assert [len(b) for b in batches] == [16, 16, 8]
    for b in batches:
        flat = b.reshape(len(b), -1)
        assert (np.abs(flat[:, None] - flat[None]).max(axis=2) + np.eye(len(b))).min() > 0.05  # each its own field
