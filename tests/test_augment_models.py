import keras
import numpy as np
import pytest

from mnist99.config import ModelConfig, defaults, load_config
from mnist99.data.augment import AUGMENT_OPS, build_augmenter
from mnist99.data.model_input import to_model_input
from mnist99.models import MODELS, build_model
from tests.conftest import assert_takes_a_training_step


def batch():
    x = np.zeros((16, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = 255
    return to_model_input(x)


@pytest.mark.parametrize("op", AUGMENT_OPS.names())
def test_each_op_keeps_shape_and_range_and_changes_the_image(op):
    cfg = defaults().augment
    for other in AUGMENT_OPS.names():
        getattr(cfg, other).enabled = other == op
    aug = build_augmenter(cfg, seed=3)
    images = batch()
    out = np.asarray(aug(images, training=True))
    assert out.shape == (16, 28, 28, 1)
    assert out.min() >= -1e-4 and out.max() <= 1 + 1e-4
    assert not np.allclose(out, np.asarray(images))


FIRST_BATCH = """
import hashlib, sys, keras, numpy as np
from mnist99.data.augment import build_augmenter
from mnist99.config import defaults
from mnist99.data.batches import make_dataset
for seed in map(int, sys.argv[1:]):
    keras.utils.set_random_seed(seed)  # as training does (configure_runtime)
    x = np.random.default_rng(0).integers(0, 255, (64, 28, 28)).astype(np.uint8)
    aug = build_augmenter(defaults().augment, seed)
    images, labels = next(iter(make_dataset(x, np.arange(64) % 10, 32, True, aug, seed)))
    assert labels.shape == (32, 10)
    print(seed, hashlib.sha256(images.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_augmentation_is_reproducible_across_processes_with_a_seed(monkeypatch):
    """The same seed gives the same augmented batches in tf.data (one batch mapped at a time) in a new
    process as in this one (after whatever this worker ran before), and after another seed's batches in
    the same process; another seed gives others."""
    import contextlib
    import io
    import subprocess
    import sys

    def parse(out: str, seeds) -> dict[str, str]:
        return dict(line.split() for line in out.strip().splitlines()[-len(seeds):])

    here = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["-c", "5", "6"])
    with contextlib.redirect_stdout(here):
        exec(FIRST_BATCH, {})
    elsewhere = subprocess.run([sys.executable, "-c", FIRST_BATCH, "6", "5"], capture_output=True, text=True, check=True)
    first, second = parse(here.getvalue(), (5, 6)), parse(elsewhere.stdout, (6, 5))
    assert first == second and first["5"] != first["6"]


@pytest.mark.parametrize("op", AUGMENT_OPS.names())
def test_each_op_in_tf_data_keeps_every_image_its_own(op):
    """In tf.data no two augmented images of a batch are the same (Keras 3.15's elastic op, given an
    unknown batch size, pasted one distorted image over half the batch)."""
    from mnist99.data.batches import make_dataset

    cfg = defaults().augment
    for other in AUGMENT_OPS.names():
        getattr(cfg, other).enabled = other == op
    cfg.elastic.probability = 1.0
    rng = np.random.default_rng(0)
    x = np.zeros((40, 28, 28), np.uint8)
    for i in range(40):  # a different bar in each image
        r, c = rng.integers(4, 18, 2)
        x[i, r:r + 8, c:c + 4] = 255
    ds = make_dataset(x, np.arange(40) % 10, 16, training=True, augmenter=build_augmenter(cfg, seed=3), seed=1)
    seen = 0
    for images, _ in ds:
        flat = np.asarray(images).reshape(len(images), -1)
        gaps = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2) + np.eye(len(flat))
        assert gaps.min() > 0.05, f"{op}: two augmented images in one batch are the same"
        seen += len(flat)
    assert seen == 32  # two full batches; the partial one is dropped in training


@pytest.mark.parametrize("op", ["rotation", "elastic", "lines"])
def test_no_two_training_batches_share_their_random_draws(op):
    """Keras 3.15's SeedGenerator reads and then bumps its state, so tf.data map calls running in
    parallel drew the same seed: of 40 batches of one image, 3 pairs came out identical (rotation)."""
    from mnist99.data.batches import make_dataset

    cfg = defaults().augment
    for other in AUGMENT_OPS.names():
        getattr(cfg, other).enabled = other == op
    cfg.elastic.probability = cfg.lines.probability = 1.0
    x = np.zeros((1600, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = 255  # one image: any two equal batches had equal draws
    ds = make_dataset(x, np.zeros(1600, int), 16, training=True, augmenter=build_augmenter(cfg, seed=3), seed=1)
    flat = np.stack([np.asarray(images).ravel() for images, _ in ds])
    gaps = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2) + np.eye(len(flat))
    assert gaps.min() > 0, f"{int((gaps == 0).sum()) // 2} pairs of {len(flat)} batches drew the same {op}"


def test_disabled_augmentation_is_none():
    assert build_augmenter(defaults().augment.model_copy(update={"enabled": False}), 0) is None


@pytest.mark.parametrize("name", MODELS.names())
def test_each_model_builds_and_takes_a_training_step(name):
    from mnist99.training.recipe import compile_model

    cfg = load_config([], [f"model.name={name}", "model.width=8", "model.depth=2"])
    model = compile_model(cfg, steps_per_epoch=1)
    probs = assert_takes_a_training_step(model)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", ["rescnn", "resmlp"])
def test_tophat_takes_backgrounds_wider_than_its_window_out_and_keeps_strokes(name, tmp_path):
    cfg = load_config([], [f"model.name={name}", "model.width=8", "model.depth=1", "model.tophat=7"])
    model = build_model(cfg.model)
    first = keras.Model(model.input, model.get_layer("tophat").output)
    stroke = np.zeros((1, 28, 28, 1), np.float32)
    stroke[0, 4:24, 13:16] = 1.0  # a 3-px vertical stroke, as MNIST's 1
    ramp = np.linspace(0.0, 0.5, 28, dtype=np.float32)[None, :, None, None] * np.ones((1, 28, 28, 1), np.float32)
    np.testing.assert_allclose(first(stroke + 0.3), stroke, atol=1e-5)  # a grey background leaves, the borders too
    # uneven light leaves too: all but its last 3 px of rise at the right border (the window's half)
    np.testing.assert_allclose(first(stroke + ramp), stroke, atol=3 * 0.5 / 27 + 1e-5)
    model.save(tmp_path / "m.keras")  # stock layers: loads in safe mode, without mnist99's objects
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(stroke + ramp), model(stroke + ramp), atol=1e-6)
    assert "tophat" not in [layer.name for layer in build_model(defaults().model).layers]  # off by default


@pytest.mark.parametrize("size", [3, 4, 7])
def test_tophat_pooled_by_rows_then_columns_equals_the_opening_over_the_whole_square(size):
    from mnist99.models.layers import tophat

    images = np.random.default_rng(size).random((4, 28, 28, 1), dtype=np.float32)
    inputs = keras.Input((28, 28, 1))
    top = keras.Model(inputs, tophat(inputs, load_config([], [f"model.tophat={size}"]).model))

    def square_max(x):
        return keras.ops.max_pool(x, size, strides=1, padding="same")

    opened = square_max(-square_max(-images))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(top(images)), keras.ops.convert_to_numpy(images - opened))


@pytest.mark.parametrize("size", [1, 2, 29])
def test_tophat_windows_that_would_erase_the_digit_or_exceed_the_image_are_refused(size):
    from mnist99.errors import ConfigError

    with pytest.raises(ConfigError, match="model.tophat"):
        load_config([], [f"model.tophat={size}"])


def test_plaincnn_convolves_the_whole_image_without_shortcuts_and_keeps_where_features_lie():
    model = build_model(defaults().model.model_copy(update={"name": "plaincnn"}))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.output.shape[1] for conv in convs] == [26, 24, 12, 10, 8, 4]  # no stride before 24x24
    assert [conv.output.shape[-1] for conv in convs] == [32] * 3 + [64] * 3
    kinds = {type(layer) for layer in model.layers}
    assert keras.layers.Add not in kinds and keras.layers.GlobalAveragePooling2D not in kinds
    assert keras.layers.Flatten in kinds  # the head sees each of the 4x4 positions apart
    assert model.count_params() == 326_826  # the module docstring's ~330k


def test_plaincnn_refuses_a_depth_that_leaves_no_image():
    from mnist99.errors import ConfigError

    assert build_model(defaults().model.model_copy(update={"name": "plaincnn", "width": 4, "depth": 4})).output.shape[-1] == 10
    with pytest.raises(ConfigError, match="model.depth 5 is too deep for plaincnn"):
        build_model(defaults().model.model_copy(update={"name": "plaincnn", "width": 4, "depth": 5}))


def test_unknown_model_lists_valid_names():
    from mnist99.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model 'vgg' .*rescnn"):
        build_model(ModelConfig.model_construct(name="vgg"))  # unvalidated: the config refuses it already


def test_training_learns_the_synthetic_task(tiny_splits):
    """The label is a bar's row: a position task, so the flattening MLP is the right learner."""
    from mnist99.training.fit import train_model

    cfg = load_config([], ["model.name=resmlp", "model.width=32", "model.depth=1", "train.epochs=6", "train.batch_size=16",
                           "augment.enabled=false", "train.verbose=0", "train.schedule.name=constant"])
    result = train_model(cfg, tiny_splits)
    assert result.metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert result.metrics["epochs_run"] == len(result.history["loss"]) <= 6


def test_robust_config_trains_with_every_robustness_op(tiny_splits):
    """configs/robust.yaml switches on the ops that imitate seen corruption families (off by default); they
    run in tf.data and the model trains."""
    from mnist99.training.fit import train_model

    cfg = load_config(["robust"], ["model.name=resmlp", "model.width=8", "model.depth=1", "train.epochs=1",
                                   "train.batch_size=32", "train.verbose=0"])
    switched_on = {op for op in AUGMENT_OPS.names() if getattr(cfg.augment, op).enabled > getattr(defaults().augment, op).enabled}
    assert switched_on == {"blur", "erasing", "lines", "contrast", "brightness", "noise"}
    result = train_model(cfg, tiny_splits)
    assert np.isfinite(result.history["loss"][0]) and result.metrics["epochs_run"] == 1


def test_blur_is_isotropic_and_picks_a_sigma_per_image():
    """The blur op spreads a dot the same along rows as along columns (a one-axis blur would imitate the
    held-out motion blur), and the images of one batch get different sigmas."""
    from mnist99.data.augment import RandomBlur

    dots = np.zeros((64, 28, 28, 1), np.float32)
    dots[:, 14, 14] = 1.0
    out = np.asarray(RandomBlur(probability=1.0, max_sigma=2.0, seed=1)(dots, training=True))[..., 0]
    np.testing.assert_allclose(out, out.transpose(0, 2, 1), atol=1e-6)
    assert len(np.unique(out[:, 14, 14].round(4))) >= 3  # of the 4 sigma levels
    assert np.all(out[:, 14, 14] < 0.7)  # every chosen image is blurred (sigma 0.5 leaves 0.62 of the dot)


def test_lines_draw_one_white_stroke_dashed_as_asked():
    """Each chosen image gains a stroke (ink only added, tens of pixels, at many angles); with dashed=1
    the stroke falls apart into pieces, with dashed=0 it stays whole."""
    from scipy import ndimage

    from mnist99.data.augment import RandomLines

    blank = np.zeros((32, 28, 28, 1), np.float32)
    # a short stroke may fit in one dash: most, not all, dashed strokes fall apart
    for dashed, pieces, share, least in ((0.0, lambda n: n == 1, 0.8, 8), (1.0, lambda n: n >= 2, 0.6, 3)):
        lines = RandomLines(probability=1.0, min_wave=0.0, max_wave=0.0, max_width=3.0, across_width=3.0,
                            dashed=dashed, across=0.0, seed=2)
        ink = np.asarray(lines(blank, training=True))[..., 0]
        assert ink.min() >= 0 and ink.max() <= 1
        strokes = ink > 0.5
        assert np.all(strokes.sum(axis=(1, 2)) >= least)  # a 10-px stroke, half of it in dashes
        counts = [ndimage.label(s, structure=np.ones((3, 3)))[1] for s in strokes]  # diagonal neighbours join
        assert np.mean([pieces(n) for n in counts]) > share, counts
    assert strokes.any(axis=1).sum(axis=1).std() > 2  # strokes of different extents and angles


def test_lines_across_span_the_width_near_horizontal_anywhere_down_the_image():
    """With across=1 every stroke crosses most of the width (as the zigzag and dotted-line corruptions
    do) within 15 degrees of horizontal, at rows all over the image; with across=0 they are shorter."""
    from mnist99.data.augment import RandomLines

    blank = np.zeros((64, 28, 28, 1), np.float32)
    ink = {a: np.asarray(RandomLines(1.0, 0.0, 0.0, 3.0, 3.0, dashed=0.0, across=a, seed=3)(blank, training=True))[..., 0] > 0.5
           for a in (0.0, 1.0)}
    columns = ink[1.0].any(axis=1).sum(axis=1)
    assert columns.min() >= 20 and columns.mean() > ink[0.0].any(axis=1).sum(axis=1).mean() + 8
    rows = [np.nonzero(image.any(axis=1))[0] for image in ink[1.0]]
    assert max(r.max() - r.min() for r in rows) <= 28 * np.tan(np.pi / 12) + 4  # the tilt, plus the pen's width
    centres = [r.mean() for r in rows]
    assert min(centres) < 8 and max(centres) > 20  # near the top and near the bottom


def test_lines_wave_by_at_least_min_wave():
    """With min_wave every stroke waves off its straight course (as the zigzag corruption's does), by about
    the amplitude's rms; with max_wave=0 strokes stay straight."""
    from mnist99.data.augment import RandomLines

    blank = np.zeros((32, 28, 28, 1), np.float32)

    def off_course(min_wave, max_wave):  # per stroke: std of each column's ink row about a fitted line
        lines = RandomLines(1.0, min_wave, max_wave, 3.0, 3.0, dashed=0.0, across=1.0, seed=3)
        out = []
        for image in np.asarray(lines(blank, training=True))[..., 0]:
            cols = np.nonzero(image.sum(axis=0) > 0.5)[0]
            rows = (image[:, cols] * np.arange(28)[:, None]).sum(axis=0) / image[:, cols].sum(axis=0)
            out.append(np.std(rows - np.polyval(np.polyfit(cols, rows, 1), cols)))
        return np.array(out)

    assert off_course(0.0, 0.0).max() < 0.4
    assert off_course(1.5, 3.0).min() > 0.7


def test_lines_pen_width_reaches_max_width_and_across_width():
    """Each straight stroke across is 1 px to across_width px wide at half ink: about 1 px with across_width=1,
    up to 5 px (2.7 px on average at this seed) with across_width=5, whatever max_width says; the other
    strokes take max_width and ignore across_width."""
    from mnist99.data.augment import RandomLines

    blank = np.zeros((32, 28, 28, 1), np.float32)

    def widths(max_width, across_width, across=1.0):  # per stroke: the half-inked pixels over its length
        lines = RandomLines(1.0, 0.0, 0.0, max_width, across_width, dashed=0.0, across=across, seed=4)
        ink = np.asarray(lines(blank, training=True))[..., 0] >= 0.5
        if across:  # a column crosses the near-horizontal stroke once: its median count is the width
            return np.array([np.median(image.sum(axis=0)[4:-4]) for image in ink])
        return np.array([image.sum() / max(image.any(axis=0).sum(), image.any(axis=1).sum()) for image in ink])

    thin, broad = widths(5.0, 1.0), widths(1.0, 5.0)
    assert thin.max() <= 2
    assert broad.max() >= 4 and broad.max() <= 6 and broad.mean() > thin.mean() + 1.5
    others = {w: widths(w, 6.0 - w, across=0.0) for w in (1.0, 5.0)}  # strokes at any angle: max_width only
    assert others[5.0].mean() > others[1.0].mean() + 1.0 and others[1.0].max() <= 2.5


def test_erasing_boxes_are_white_for_their_share():
    """white_share=1 fills every box white (a bright occluder); the default 0 keeps Keras' one black-box layer."""
    import keras

    cfg = defaults().augment
    for other in AUGMENT_OPS.names():
        getattr(cfg, other).enabled = other == "erasing"
    cfg.erasing.probability, cfg.erasing.white_share = 1.0, 1.0
    out = np.asarray(build_augmenter(cfg, seed=3)(np.zeros((16, 28, 28, 1), np.float32), training=True))
    assert np.all((out == 1.0).sum(axis=(1, 2, 3)) >= 0.02 * 28 * 28 - 1)
    cfg.erasing.white_share = 0.0
    (layer,) = build_augmenter(cfg, seed=3).layers
    assert isinstance(layer, keras.layers.RandomErasing) and layer.fill_value == 0.0
