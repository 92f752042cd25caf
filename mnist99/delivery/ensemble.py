"""The ensemble's math: which members to train, one Keras model that averages them, and their scores.

No tracking and no TensorFlow here, so any Keras backend can use it (``benchmarks/gpu.py`` does, on JAX).

The combined model is built from stock Keras layers only (Rescaling, Reshape, Add), so it loads under
Keras safe mode in any process, including ``mlflow models serve``, without importing mnist99.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from mnist99.config import Config, MemberConfig, with_overrides
from mnist99.constants import IMAGE_SHAPE, MODEL_INPUT_SHAPE
from mnist99.data.model_input import to_model_input
from mnist99.delivery.forward import predict_probs
from mnist99.models.folding import fold_batchnorm
from mnist99.models.twin import serving_twin
from mnist99.reports.metrics import accuracy


def member_weights(n: int, weights: Sequence[float] | None = None) -> list[float]:
    """Weights that sum to 1: equal when ``weights`` is None, else ``weights`` normalised.

    Raises ValueError naming the weights when their count is not ``n`` or any is negative or all are 0.
    """
    if n < 1:
        raise ValueError("an ensemble needs at least one member")
    if weights is None:
        return [1.0 / n] * n
    values = [float(w) for w in weights]
    if len(values) != n or min(values) < 0 or sum(values) <= 0:
        raise ValueError(f"member weights {values} must be {n} non-negative numbers with a positive sum")
    total = sum(values)
    return [w / total for w in values]


def average(probabilities: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The (weighted) mean of members' (N, 10) probabilities: what :func:`combine`'s model computes."""
    return np.average(np.stack(probabilities), axis=0, weights=member_weights(len(probabilities), weights))


def for_serving(member: keras.Model) -> keras.Model:
    """``member`` as an ensemble scores and serves it: its serving twin (:mod:`mnist99.models.twin`: float32,
    Keras' own layers) with each BatchNorm folded into the layer before it (:mod:`mnist99.models.folding`: the
    same function, fewer passes over the activations). ``member`` itself when it is already both."""
    return fold_batchnorm(serving_twin(member))


def combine(members: list[keras.Model], weights: Sequence[float] | None = None) -> keras.Model:
    """One functional model: uint8 (N, 28, 28) -> /255 -> each member -> weighted mean of probabilities (N, 10).

    An (N, 28, 28, 1) batch is accepted too: Keras squeezes the trailing 1 of a functional model's
    input (one rank per model instance in ``predict``: Keras 3.15 cannot retrace across ranks).
    Members take float (28, 28, 1) in [0, 1] and return softmax probabilities; they are wrapped under
    the names ``member_<i>`` so that members that share layer names (reloaded copies of one
    architecture) nest without clashes. Layers are pinned to float32, and members join as
    :func:`for_serving` makes them (float32, Keras' own layers, BatchNorm folded), so that no 16-bit
    arithmetic and no class of mnist99's reaches an export.

    Args:
        members: the trained models, in order (``member_1`` is the first).
        weights: one non-negative weight per member (normalised here), or None for the plain mean.
    """
    scales = member_weights(len(members), weights)
    digits = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="digits")
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="to_unit_range")(digits)
    x = keras.layers.Reshape(MODEL_INPUT_SHAPE, dtype="float32", name="add_channel")(x)
    weighted = []
    for i, (member, scale) in enumerate(zip(members, scales), start=1):
        member = for_serving(member)  # a net as trained: 16-bit convolutions, fused BatchNorm layers
        named = keras.Model(member.input, member.output, name=f"member_{i}")
        weighted.append(keras.layers.Rescaling(scale, dtype="float32", name=f"weight_{i}")(named(x)))
    probs = weighted[0] if len(weighted) == 1 else keras.layers.Add(dtype="float32", name="probs")(weighted)
    return keras.Model(digits, probs, name=f"ensemble_{len(members)}x")


def shift_averaged(member: keras.Model, shifts: Sequence[Sequence[int]]) -> keras.Model:
    """``member`` averaged over its input and copies shifted by each (dy, dx) of ``shifts`` (test-time augmentation).

    Shifts are zero padding then cropping (stock ``ZeroPadding2D``/``Cropping2D``): the model still
    loads in Keras safe mode and converts to ONNX and LiteRT builtin ops. Without shifts, ``member`` itself.
    """
    if not shifts:
        return member
    pad = max(abs(d) for shift in shifts for d in shift)
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="tta_input")
    padded = keras.layers.ZeroPadding2D(pad, name="tta_pad")(inputs)
    views = [member(inputs)]
    for i, (dy, dx) in enumerate(shifts, start=1):
        # The view's pixel (r, c) is the digit's (r - dy, c - dx): the digit moves by (dy, dx).
        crop = ((pad - dy, pad + dy), (pad - dx, pad + dx))
        views.append(member(keras.layers.Cropping2D(crop, name=f"tta_shift_{i}")(padded)))
    return keras.Model(inputs, keras.layers.Average(dtype="float32", name="tta_mean")(views), name=f"tta_{member.name}")


def as_ensemble(model: keras.Model) -> keras.Model:
    """``model`` if it already takes uint8 (N, 28, 28) digits (an ensemble, or an ONNX/LiteRT file's
    runtime from ``load_ensemble``); else a member wrapped by ``combine``."""
    if not isinstance(model, keras.Model):
        return model
    digits = model.inputs[0]
    if digits.dtype == "uint8" and tuple(digits.shape[1:]) == IMAGE_SHAPE:
        return model
    return combine([model])


def members_of(ensemble: keras.Model) -> list[keras.Model]:
    """The member models inside a model built by :func:`combine` (e.g. after reloading it); none for an
    ONNX/LiteRT file's runtime, whose graph no longer has separable members."""
    if not isinstance(ensemble, keras.Model):
        return []
    return [layer for layer in ensemble.layers if layer.name.startswith("member_") and isinstance(layer, keras.Model)]


def member_plan(cfg: Config) -> list[tuple[Config, str | None]]:
    """Each member's config and the train run it reuses (None: train it).

    ``ensemble.members`` gives seeds and dotted overrides; without it, the members are the base
    config with seeds ``seed, seed+1, ...``. A member without a seed gets ``seed + its index``.
    """
    specs = cfg.ensemble.members or [MemberConfig() for _ in range(cfg.ensemble.size)]
    plan = []
    for i, spec in enumerate(specs):
        seed = cfg.seed + i if spec.seed is None else spec.seed
        plan.append((with_overrides(cfg, {**spec.overrides, "seed": seed}), spec.run_id))
    return plan


def predict_members(models: Sequence[keras.Model], images: np.ndarray) -> list[np.ndarray]:
    """Each member's (N, 10) probabilities on uint8 (N, 28, 28) ``images``."""
    inputs = to_model_input(images)
    return [predict_probs(m, inputs) for m in models]


def disagreement(probabilities: list[np.ndarray]) -> float:
    """The fraction of images on which the members' predicted digits are not all the same."""
    votes = np.stack([p.argmax(axis=1) for p in probabilities])
    return float(np.mean((votes != votes[0]).any(axis=0)))


def score(probabilities: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray], weights: list[float]) -> dict:
    """Members' and ensemble's accuracy per split (``val``, ``test``), the gain over the best member, disagreement."""
    metrics: dict[str, float] = {}
    for split, probs in probabilities.items():
        members = [accuracy(p, labels[split]) for p in probs]
        metrics[f"{split}_accuracy"] = accuracy(average(probs, weights), labels[split])
        metrics.update({f"member_{i}_{split}_accuracy": acc for i, acc in enumerate(members, start=1)})
        metrics[f"best_member_{split}_accuracy"] = max(members)
    metrics["ensemble_gain"] = metrics["test_accuracy"] - metrics["best_member_test_accuracy"]
    metrics["val_ensemble_gain"] = metrics["val_accuracy"] - metrics["best_member_val_accuracy"]
    metrics["disagreement"] = disagreement(probabilities["test"])
    metrics["val_disagreement"] = disagreement(probabilities["val"])
    return metrics
