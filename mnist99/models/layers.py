"""Building blocks shared by the models: activations, initialisers and dropout chosen by name.

Maxout needs the linear layer before it to produce ``maxout_pieces`` times the units, so the model
builders multiply their units by :func:`widening`; for every other activation it is 1.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator

import keras

from mnist99.config import ModelConfig
from mnist99.constants import NUM_CLASSES
from mnist99.errors import ConfigError
from mnist99.models.fused_batchnorm import FusedBatchNormalization
from mnist99.registry import Registry

ACTIVATIONS: Registry = Registry("activation")
INITIALIZERS = ("he_normal", "glorot_uniform", "orthogonal", "lecun_normal")
# Activations whose theory assumes a particular initialiser; used when the config keeps the default.
# SELU's self-normalisation (Klambauer et al., 2017) is derived for LeCun-normal weights.
PAIRED_INITIALIZERS = {"selu": "lecun_normal"}


@keras.saving.register_keras_serializable(package="mnist99")
class Maxout(keras.layers.Layer):
    """Maxout (Goodfellow et al., 2013): the max over each group of ``pieces`` consecutive channels.

    The last axis shrinks from C to C / pieces, so the layer before must produce ``pieces`` times
    the units wanted. Registered for serialisation, so ``.keras`` files load in safe mode.
    """

    def __init__(self, pieces: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if pieces < 2:
            raise ValueError(f"Maxout needs pieces >= 2, got {pieces}")
        self.pieces = pieces

    def build(self, input_shape) -> None:
        if input_shape[-1] is None or input_shape[-1] % self.pieces:
            raise ValueError(f"Maxout with {self.pieces} pieces needs a channel count divisible by "
                             f"{self.pieces}, got input shape {tuple(input_shape)}")

    def call(self, inputs):
        groups = (-1, *inputs.shape[1:-1], inputs.shape[-1] // self.pieces, self.pieces)
        return keras.ops.max(keras.ops.reshape(inputs, groups), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.pieces)

    def get_config(self) -> dict:
        return {**super().get_config(), "pieces": self.pieces}


@ACTIVATIONS.register("relu")
def _relu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.ReLU(name=name)


@ACTIVATIONS.register("leaky_relu")
def _leaky_relu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=cfg.leaky_alpha, name=name)


@ACTIVATIONS.register("prelu")
def _prelu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.PReLU(shared_axes=None, name=name)


@ACTIVATIONS.register("elu")
def _elu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.ELU(name=name)


@ACTIVATIONS.register("selu")
def _selu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.Activation("selu", name=name)


@ACTIVATIONS.register("gelu")
def _gelu(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.Activation("gelu", name=name)


@ACTIVATIONS.register("swish")
def _swish(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return keras.layers.Activation("swish", name=name)


@ACTIVATIONS.register("maxout")
def _maxout(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    return Maxout(cfg.maxout_pieces, name=name)


def widening(cfg: ModelConfig) -> int:
    """How many times the units the linear layer before the activation must produce (maxout: k)."""
    return cfg.maxout_pieces if cfg.activation == "maxout" else 1


def activation(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    """A fresh layer of the activation ``cfg.activation``, called ``name`` (Keras picks one if None).

    A fixed name keeps per-layer diagnostics (``dead_units/<layer>``) comparable across runs.
    """
    return ACTIVATIONS.get(cfg.activation)(cfg, name=name)


@functools.cache
def _default_initializer() -> str:
    """``model.initializer`` in configs/default.yaml, read once: at call time, because validating a
    config imports this module, and cached, because every layer of a net asks."""
    from mnist99.config import defaults

    return defaults().model.initializer


def initializer(cfg: ModelConfig) -> keras.initializers.Initializer:
    """The kernel initialiser named by ``cfg.initializer``.

    Left at configs/default.yaml's value (he_normal), it becomes the activation's paired initialiser where it has
    one: SELU gets lecun_normal. Naming any other initialiser uses that one as it is.
    """
    if cfg.initializer not in INITIALIZERS:
        raise ConfigError(f"unknown initializer '{cfg.initializer}' (valid: {', '.join(INITIALIZERS)})")
    name = cfg.initializer
    if name == _default_initializer():
        name = PAIRED_INITIALIZERS.get(cfg.activation, name)
    return keras.initializers.get(name)


def dropout(cfg: ModelConfig) -> keras.layers.Layer:
    """Dropout, or AlphaDropout for SELU (plain dropout would break its self-normalisation)."""
    if cfg.activation == "selu":
        return keras.layers.AlphaDropout(cfg.dropout)
    return keras.layers.Dropout(cfg.dropout)


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """``model``'s layers, those of the models nested in it (blocks, ensemble members) in their place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def batch_norm(cfg: ModelConfig, name: str | None = None) -> keras.layers.Layer:
    """BatchNormalization with the configured moving-statistics momentum, trained with TensorFlow's fused kernel
    (:mod:`mnist99.models.fused_batchnorm`; the serving twin swaps in Keras' own layer)."""
    return FusedBatchNormalization(momentum=cfg.bn_momentum, name=name)


def regularizer(cfg: ModelConfig) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None


def conv_bn(x, filters: int, cfg: ModelConfig, kernel: int = 3, strides: int = 1, padding: str = "same"):
    """A bias-free convolution then BatchNorm (whose shift makes the bias redundant)."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                            kernel_initializer=initializer(cfg), kernel_regularizer=regularizer(cfg))(x)
    return batch_norm(cfg)(x)


def tophat(x, cfg: ModelConfig):
    """The input minus its grey opening over a ``cfg.tophat``-px square (unchanged when 0): a white top-hat.

    The opening (the minimum over the window, then the maximum) keeps what is wider than the window: a
    grey background, haze, uneven light. Subtracting it leaves the strokes, narrower than the window, on
    black, so such backgrounds never reach the first layer, without training on any of them. A local mean
    would take the strokes' own brightness out with the background; the opening leaves strokes whole.
    Stock layers (a minimum is a max-pool of the negated image; "same" max-pooling ignores the
    padding, so the borders are treated like the rest): the model loads in safe mode and exports to
    ONNX and LiteRT with builtin ops. Each square is pooled as a row then a column, the same maximum
    bit for bit in 2k reads instead of k*k: TensorFlow's CPU kernel reads every cell of the window, and
    on an AVX2-only CPU 1x7 then 7x1 ran 2.75x faster than one 7x7 pool (benchmarks/results/cpu-2core/
    2026-12-05-inference-robust-tophat-rows-columns.md).
    """
    if not cfg.tophat:
        return x

    def pool(x, name):
        x = keras.layers.MaxPooling2D((1, cfg.tophat), strides=1, padding="same", name=f"{name}_rows")(x)
        return keras.layers.MaxPooling2D((cfg.tophat, 1), strides=1, padding="same", name=name)(x)

    negate = functools.partial(keras.layers.Rescaling, -1.0)
    eroded = negate(name="tophat_eroded")(pool(negate(name="tophat_negated")(x), "tophat_min"))
    opened = pool(eroded, "tophat_opened")
    return keras.layers.Subtract(name="tophat")([x, opened])


def classifier_head(x, cfg: ModelConfig):
    """Dropout then a float32 softmax over the 10 digits (float32 even under mixed precision)."""
    x = dropout(cfg)(x)
    x = keras.layers.Dense(NUM_CLASSES, kernel_regularizer=regularizer(cfg), name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
