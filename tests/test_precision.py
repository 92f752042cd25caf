"""Mixed precision speeds up training only: members are scored, saved and exported as float32 twins."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.delivery.ensemble import combine
from mnist99.models import build_model
from mnist99.models.precision import global_policy, mixed_layers
from mnist99.models.twin import serving_twin


@pytest.fixture
def bf16_member() -> keras.Model:
    """A tiny rescnn built as ``train.mixed_precision: bfloat16`` builds it (float32 weights, bfloat16 convs)."""
    keras.utils.set_random_seed(1)
    with global_policy("mixed_bfloat16"):
        return build_model(load_config([], ["model.width=4", "model.depth=1"]).model)


def test_the_twin_has_the_weights_and_computes_in_float32(bf16_member):
    assert "conv2d" in " ".join(mixed_layers(bf16_member))
    twin = serving_twin(bf16_member)
    assert mixed_layers(twin) == [] and twin.name == bf16_member.name
    for ours, theirs in zip(twin.get_weights(), bf16_member.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(twin.predict(images, verbose=0), bf16_member.predict(images, verbose=0), atol=0.02)
    assert serving_twin(twin) is twin  # a float32 model is its own twin


@pytest.mark.integration  # a real LiteRT conversion
def test_an_ensemble_of_mixed_precision_members_exports_to_litert(bf16_member, tmp_path):
    """LiteRT has no builtin bfloat16 Conv2D: the ensemble takes the member's float32 twin."""
    from mnist99.delivery.formats import write_litert
    from mnist99.delivery.runtimes import LiteRTModel

    ensemble = combine([bf16_member])
    assert mixed_layers(ensemble) == []
    write_litert(ensemble, tmp_path / "ensemble.tflite")
    exported = LiteRTModel(Path(tmp_path / "ensemble.tflite"))
    assert exported.custom_ops() == []
    digits = np.random.default_rng(1).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(exported.predict(digits, batch_size=16), ensemble.predict(digits, verbose=0), atol=1e-4)
