"""The MNIST-C-style corruptions (mnist99.data.corruptions) on synthetic digits, and their split from training."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mnist99.data import corruptions
from mnist99.data.corruptions import CORRUPTIONS, corrupt
from tests.conftest import ROOT

ISSUE_LIST = {"gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "motion_blur", "glass_blur", "rotate",
              "shear", "scale", "translate", "brightness", "contrast", "stripe", "occlusion", "dotted_line", "zigzag",
              "fog", "thicken", "thin"}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Twelve synthetic 'digits' in MNIST's layout: rings ('0') and bars ('1') about 3 px thick near the
    centre, anti-aliased, on black, far enough from the edge that a 4-px shift keeps all their ink."""
    rows, cols = np.mgrid[0:28, 0:28]
    out = []
    for i in range(12):
        r0, c0 = 13.5 + (i % 3) - 1, 13.5 + (i % 4) - 1.5
        if i % 2:
            distance = np.abs(np.hypot(rows - r0, cols - c0) - 5 - i % 3)
        else:
            distance = np.where(np.abs(rows - r0) < 8, np.abs(cols - c0 - (rows - r0) * 0.1 * (i % 3)), 9)
        out.append(np.clip(2.5 - distance, 0, 1) * 255)
    return np.rint(out).astype(np.uint8)


def test_the_registry_holds_every_corruption_of_the_issue():
    assert ISSUE_LIST <= set(CORRUPTIONS.names())


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_each_corruption_is_deterministic_keeps_shape_and_changes_the_digit_sanely(name, digits):
    out = corrupt(digits, name, seed=3)
    assert out.shape == digits.shape and out.dtype == np.uint8
    assert np.array_equal(out, corrupt(digits, name, seed=3))
    change = np.abs(out.astype(float) - digits).mean(axis=(1, 2))  # mean |change| per image, of 255
    assert change.min() > 1.0, f"{name} leaves an image (nearly) as it was: {change.min():.2f}"
    assert change.max() < 140, f"{name} replaces an image rather than corrupting it: {change.max():.1f}"


def test_a_corruption_depends_on_its_seed_and_not_on_the_others_drawn_alongside(digits):
    assert not np.array_equal(corrupt(digits, "gaussian_noise", 0), corrupt(digits, "gaussian_noise", 1))
    alone = corrupt(digits, "zigzag", 0)
    corrupt(digits, "fog", 0)
    assert np.array_equal(alone, corrupt(digits, "zigzag", 0))


def test_translate_moves_the_ink_by_at_most_four_pixels(digits):
    moved = corrupt(digits, "translate", seed=0)
    before = np.array([ndimage.center_of_mass(d.astype(float)) for d in digits])
    after = np.array([ndimage.center_of_mass(d.astype(float)) for d in moved])
    distance = np.hypot(*(after - before).T)
    assert distance.max() <= 4.0 + 0.05  # bilinear resampling keeps the centre of mass; uint8 rounding moves it a hair
    assert distance.min() >= 3.5
    assert abs(moved.astype(float).sum() / digits.astype(float).sum() - 1) < 0.01  # no ink lost at the edge


def test_geometric_corruptions_keep_the_ink_and_thickness_changes_it_the_right_way(digits):
    ink = digits.astype(float).sum()
    for name in ("rotate", "shear"):
        assert abs(corrupt(digits, name).astype(float).sum() / ink - 1) < 0.05, name
    assert corrupt(digits, "scale").astype(float).sum() < 0.6 * ink  # 0.7 x the size: about half the area
    assert corrupt(digits, "thicken").astype(float).sum() > 1.3 * ink
    assert corrupt(digits, "thin").astype(float).sum() < 0.8 * ink


def test_bad_input_is_refused_in_one_line(digits):
    from mnist99.errors import ConfigError

    with pytest.raises(ValueError, match=r"uint8 digits of shape \(N, 28, 28\), got float64 \(2, 28, 28\)"):
        corrupt(np.zeros((2, 28, 28)), "fog")
    with pytest.raises(ConfigError, match="unknown corruption 'snow'.*zigzag"):
        corrupt(digits, "snow")


def test_a_third_of_the_corruptions_are_held_out_and_no_training_op_imitates_them():
    """Training augmentation may borrow seen families only; the unseen ones measure robustness beyond them."""
    from mnist99.data.augment import AUGMENT_OPS, CORRUPTION_FAMILIES

    unseen = set(corruptions.names(seen=False))
    assert len(unseen) >= len(CORRUPTIONS.names()) / 3
    assert set(CORRUPTION_FAMILIES) == set(AUGMENT_OPS.names())  # every op says what it imitates
    imitated = {family for families in CORRUPTION_FAMILIES.values() for family in families}
    assert imitated <= set(CORRUPTIONS.names())
    assert not imitated & unseen, f"training imitates held-out corruptions: {sorted(imitated & unseen)}"
    assert sorted(corruptions.names(seen=True) + sorted(unseen)) == sorted(CORRUPTIONS.names())


def test_the_docs_list_every_corruption_with_its_family_and_parameters():
    table = (ROOT / "docs" / "ROBUSTNESS.md").read_text().split("## The corruptions", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for name in CORRUPTIONS.names():
        corruption = CORRUPTIONS.get(name)
        (row,) = [line for line in rows if line.startswith(f"| `{name}` | ")]
        assert f" | {'seen' if corruption.seen else 'unseen'} | " in row, name
        assert all(f"`{key}={value}`" in row for key, value in corruption.params.items()), row
