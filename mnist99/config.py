"""The typed configuration schema, and loading it from YAML files plus dotted overrides.

OmegaConf merges the packaged ``configs/default.yaml``, the files given and ``--set`` overrides (later
wins); pydantic validates the result once, so every stage receives a typed, range-checked
:class:`Config` and never a raw dict.

Every default value lives in one place: the commented ``configs/default.yaml``. The schema checks
types and ranges and holds no defaults (a key missing from the merged config is an error), so the
two cannot disagree; a key added later gets its default in ``default.yaml`` only. The exceptions are
the fields of list items (ensemble members, study arms, search-space specs), which ``default.yaml``
cannot hold: their defaults are here, on :class:`MemberConfig`, :class:`StudyArm` and :class:`ParamSpec`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from mnist99.durations import parse_duration
from mnist99.errors import ConfigError, first_line

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the wheel; ./configs links here in a checkout
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def _registered(kind: str, where: str) -> Callable[[str], str]:
    """A validator: the name must be in the registry at ``where`` ("module:attribute").

    Checked when the config is validated, so a typo fails before data is read or a run is opened.
    The registry modules import Keras, so they are imported only then (``import mnist99.config``
    stays light) and the registries stay the one list of valid names.
    """
    def check(name: str) -> str:
        module, attribute = where.split(":")
        valid = getattr(importlib.import_module(module), attribute)
        if name not in valid:
            names = sorted(valid.names() if hasattr(valid, "names") else valid)
            raise PydanticCustomError("unknown_name", "unknown {kind} '{name}' (valid: {valid})",
                                      {"kind": kind, "name": name, "valid": ", ".join(names)})
        return name

    return check


ModelName = Annotated[str, AfterValidator(_registered("model", "mnist99.models:MODELS"))]
ActivationName = Annotated[str, AfterValidator(_registered("activation", "mnist99.models.layers:ACTIVATIONS"))]
InitializerName = Annotated[str, AfterValidator(_registered("initializer", "mnist99.models.layers:INITIALIZERS"))]
OptimizerName = Annotated[str, AfterValidator(_registered("optimizer", "mnist99.training.optimizers:OPTIMIZERS"))]
ScheduleName = Annotated[str, AfterValidator(_registered("schedule", "mnist99.training.optimizers:SCHEDULES"))]
TunerName = Annotated[str, AfterValidator(_registered("tuner", "mnist99.tuning.tuners:TUNERS"))]
ExportFormatName = Annotated[str, AfterValidator(_registered("export format", "mnist99.delivery.formats:FORMATS"))]


def _formats_usable(names: list[str]) -> list[str]:
    """Each format listed once, its optional extra installed: checked here, so a missing one fails before training."""
    from mnist99.delivery.formats import install_hint, missing_extra

    for name in names:
        if names.count(name) > 1:
            raise PydanticCustomError("format_twice", "lists '{name}' twice", {"name": name})
        extra = missing_extra(name)
        if extra:
            raise PydanticCustomError("missing_extra", "lists '{name}', which needs the {extra} extra: {hint}",
                                      {"name": name, "extra": extra, "hint": install_hint(extra)})
    return names


# Keys the schema refuses that configs written for other mnist99 versions may hold, and what to write instead.
REPLACED_KEYS = {"export.saved_model": "export.formats, a list such as [keras, saved_model]"}


# "10m", "90s", "1h30m" or a number of seconds, validated into seconds; None: no budget.
OptionalDuration = Annotated[float | None, BeforeValidator(lambda v: None if v is None else parse_duration(v))]


class Section(BaseModel):
    """Base for every section: unknown keys are refused, values are checked on assignment; no defaults
    (they live in ``configs/default.yaml``, see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    path: str | None  # folder with the four IDX .gz files, or a Keras mnist.npz
    cache_dir: str
    val_size: int = Field(ge=10, le=30000)  # held out of train, stratified
    train_limit: int | None = Field(ge=10)  # smoke runs: a stratified subset
    test_limit: int | None = Field(ge=10)


class RotationConfig(Section):
    enabled: bool
    degrees: float = Field(ge=0, le=180)


class ShiftConfig(Section):
    enabled: bool
    fraction: float = Field(ge=0, lt=0.5)


class ZoomConfig(Section):
    enabled: bool
    fraction: float = Field(ge=0, lt=1)


class ShearConfig(Section):
    enabled: bool
    factor: float = Field(ge=0, le=1)


class ElasticConfig(Section):
    enabled: bool
    probability: float = Field(ge=0, le=1)  # chance per image
    alpha: float = Field(ge=0)  # displacement scale in pixels (Simard et al. 2003: 34)
    sigma: float = Field(gt=0, le=14)  # smoothing of the displacement field, pixels (theirs: 4)


class ShareConfig(Section):
    """An op applied to a random share of the images."""

    enabled: bool
    probability: float = Field(ge=0, le=1)  # chance per image


class NoiseConfig(ShareConfig):
    max_stddev: float = Field(gt=0, le=1)  # each noisy image's standard deviation is drawn from U(0, max)


class BlurConfig(ShareConfig):
    max_sigma: float = Field(gt=0, le=4)  # isotropic Gaussian, sigma per image: max/4, max/2, 3 max/4 or max, pixels


class ErasingConfig(ShareConfig):
    max_area: float = Field(ge=0.02, le=1)  # the box covers 2% to this share of the image
    white_share: float = Field(ge=0, le=1)  # share of the boxes filled white (a bright occluder), the rest black


class LinesConfig(ShareConfig):
    min_wave: float = Field(ge=0, le=6)  # the stroke waves across its course by at least this many pixels
    max_wave: float = Field(ge=0, le=6)  # ... and by at most this many
    max_width: float = Field(ge=1, le=6)  # the pen is 1 px to this many wide (at half ink)
    across_width: float = Field(ge=1, le=6)  # ... and for a stroke across, 1 px to this many
    dashed: float = Field(ge=0, le=1)  # chance that a stroke is dashed
    across: float = Field(ge=0, le=1)  # chance that a stroke spans the width within 15 degrees of horizontal

    @model_validator(mode="after")
    def _wave_range(self) -> LinesConfig:
        if self.min_wave > self.max_wave:
            raise ValueError(f"min_wave ({self.min_wave:g} px) must not exceed max_wave ({self.max_wave:g} px)")
        return self


class ContrastConfig(Section):
    enabled: bool
    factor: float = Field(ge=0, le=1)  # contrast multiplied by U(1 - factor, 1 + factor) per image


class BrightnessConfig(Section):
    enabled: bool
    max_delta: float = Field(ge=0, le=1)  # U(-max, max) added to every pixel of an image


class AugmentConfig(Section):
    enabled: bool
    compose: bool  # rotation, shift, zoom, shear (and elastic) as one resampling (mnist99.data.affine)
    rotation: RotationConfig
    shift: ShiftConfig
    zoom: ZoomConfig
    shear: ShearConfig
    elastic: ElasticConfig
    blur: BlurConfig
    erasing: ErasingConfig
    lines: LinesConfig
    contrast: ContrastConfig
    brightness: BrightnessConfig
    noise: NoiseConfig


class EvaluateConfig(Section):
    """The evaluation pack's options (stage ``evaluate``, and ``run``'s evaluation of the ensemble)."""

    robustness: bool  # accuracy under the corruptions of mnist99.data.corruptions, in the pack
    robustness_size: int = Field(ge=10)  # test digits corrupted (a stratified subset; all when fewer)
    robustness_seed: int = Field(ge=0)  # picks the subset and the corruptions' random draws


class ModelConfig(Section):
    name: ModelName
    activation: ActivationName
    initializer: InitializerName
    width: int = Field(ge=1, le=8192)  # rescnn: stem channels; resmlp: units per block
    depth: int = Field(ge=1, le=64)  # residual blocks
    dropout: float = Field(ge=0, lt=1)
    l2: float = Field(ge=0)
    leaky_alpha: float = Field(ge=0, lt=1)  # leaky_relu only
    maxout_pieces: int = Field(ge=2, le=8)  # maxout only
    bn_momentum: float = Field(gt=0, lt=1)  # lower tracks the moving statistics faster
    residual: bool  # resmlp: each block added to its input
    batchnorm: bool  # resmlp: BatchNormalization after every hidden Dense layer
    tophat: Literal[0] | Annotated[int, Field(ge=3, le=28)]  # white top-hat window on the input; 0: off


class OptimizerConfig(Section):
    name: OptimizerName
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    momentum: float = Field(ge=0, lt=1)  # sgd, rmsprop
    nesterov: bool  # sgd
    clipnorm: float | None = Field(gt=0)
    # Exponential moving average of the weights, used for validation and kept at the end: smooths
    # the noise of high learning rates, so validation accuracy is high early. None turns it off.
    ema: float | None = Field(gt=0, lt=1)


class ScheduleConfig(Section):
    name: ScheduleName
    warmup: float = Field(ge=0, lt=1)  # fraction of all steps (cosine, onecycle)
    final_fraction: float = Field(ge=0, le=1)  # last lr / peak lr (cosine, onecycle)
    step_every: int = Field(ge=1)  # epochs between decays (step)
    step_factor: float = Field(gt=0, le=1)  # lr multiplier per decay (step, exponential)


class EarlyStoppingConfig(Section):
    enabled: bool
    patience: int = Field(ge=1)
    min_delta: float = Field(ge=0)
    start_from: float = Field(ge=0, lt=1)  # share of train.epochs before val_loss is watched


class BudgetOverheadConfig(Section):
    """Seconds a budgeted job spends outside training steps and forward passes (which it measures)."""

    epoch: float = Field(ge=0)  # per epoch: its backup, its MLflow metrics
    member: float = Field(ge=0)  # per member: saving and logging the model, its learning curves
    job: float = Field(ge=0)  # after the members: combining, the evaluation pack's figures, the export


class TrainConfig(Section):
    epochs: int = Field(ge=1, le=1000)
    # A time budget for the job, in seconds: it sets the epochs of each member (mnist99.training.budget)
    budget: OptionalDuration
    budget_max_epochs: int = Field(ge=1, le=1000)  # the most epochs a budget gives one member
    budget_min_epochs: int = Field(ge=1, le=1000)  # fewer each, and an ensemble's budget trains fewer members
    budget_overhead: BudgetOverheadConfig
    batch_size: int = Field(ge=1, le=65536)
    label_smoothing: float = Field(ge=0, lt=1)
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    early_stopping: EarlyStoppingConfig
    # batches of clean training digits that recompute BatchNorm's statistics for the kept weights after the
    # fit (mnist99.training.batchnorm); 0: off
    batchnorm_refresh: int = Field(ge=0, le=100000)
    deterministic: bool  # TF op determinism: reproducible bits, slower
    # true: mixed_float16 (GPUs); bfloat16: mixed_bfloat16 (CPUs with AVX512-BF16/AMX). Training only: the
    # softmax stays float32, and what is scored, saved and exported computes in float32 (mnist99.models.precision)
    mixed_precision: bool | Literal["bfloat16"]
    jit_compile: Literal["auto"] | bool  # auto: XLA on a GPU only (on a CPU it slows these nets)
    strategy: Literal["auto", "mirrored", "none"]
    # the uint8 train+val images in device memory, gathered and augmented inside the compiled step
    # (mnist99.training.augmented_net); auto: on a GPU when they fit
    data_on_device: Literal["auto"] | bool
    verbose: int = Field(ge=0, le=2)  # 2: a line an epoch, 1: Keras' progress bar, 0: silent
    checkpoint_dir: str  # per-epoch backups, so a killed run resumes where it stopped


class MemberConfig(Section):
    """One ensemble member: a seed plus dotted overrides of the base config."""

    model_config = ConfigDict(extra="forbid")
    seed: int | None = None
    run_id: str | None = None  # reuse a finished train run instead of training
    overrides: dict[str, Any] = Field(default_factory=dict)


class ClaimConfig(Section):
    """A member's claim in the registry (mnist99.tracking.claims): seconds between heartbeats, and until stale."""

    heartbeat: float = Field(gt=0)
    stale: float = Field(gt=0)

    @model_validator(mode="after")
    def _stale_after_beats(self) -> ClaimConfig:
        if self.stale <= 2 * self.heartbeat:
            raise ValueError(f"stale ({self.stale:g} s) must exceed two heartbeats ({self.heartbeat:g} s each)")
        return self


# A (dy, dx) pixel shift averaged at test time besides the digit itself (delivery.ensemble.shift_averaged)
Shift = tuple[Annotated[int, Field(ge=-4, le=4)], Annotated[int, Field(ge=-4, le=4)]]


class EnsembleConfig(Section):
    size: int = Field(ge=1, le=50)
    members: list[MemberConfig]  # empty: seeds seed, seed+1, ...
    weighting: Literal["mean", "val_accuracy"]
    tta_shifts: list[Shift]
    tta_shifts_alone: list[Shift]  # for an ensemble of one member without tta_shifts of its own
    workers: Literal["auto"] | Annotated[int, Field(ge=1)]  # members trained at once, a process each

    def shifts_for(self, members: int) -> list[Shift]:
        """The test-time shifts an ensemble of ``members`` averages: ``tta_shifts``; without them, a lone
        member's ``tta_shifts_alone``. A single model gains from shifts, an ensemble does not: they average
        out the errors a second and third member would (docs/ACCURACY.md)."""
        return list(self.tta_shifts) or (list(self.tta_shifts_alone) if members == 1 else [])


class ExportConfig(Section):
    dir: str
    registered_name: str
    formats: Annotated[list[ExportFormatName], Field(min_length=1), AfterValidator(_formats_usable)]
    keep: int | None = Field(ge=1)  # SavedModel versions kept in dir; None keeps every one


class TrackingConfig(Section):
    uri: str | None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    experiment: str
    system_metrics: bool  # MLflow's CPU/memory/disk/GPU sampling, every 10 s: ~0.1 ms a sample
    claim: ClaimConfig


class ServerConfig(Section):
    """The team tracking server (stage ``server``): PostgreSQL and served artifacts."""

    dir: str = Field(min_length=1)
    artifacts: str | None  # None: <dir>/artifacts
    database: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DiagnosticsConfig(Section):
    """Per-epoch training diagnostics (mnist99.training.diagnostics), computed on one fixed validation batch."""

    enabled: bool  # studies switch it on; costs one extra forward+backward per epoch
    batch_size: int = Field(ge=1, le=10000)  # the first N validation images, the same every epoch
    sparsity_threshold: float = Field(ge=0)  # |w| below this counts as a zero weight
    overfit_patience: int = Field(ge=1)  # epochs of rising val_loss with falling train loss


class StudyArm(Section):
    """One arm of a study: a name and the dotted overrides it applies to the shared base config."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)


class StudyConfig(Section):
    """A grid of runs with the same seeds and budget, compared on one parent run (stage ``study``)."""

    name: str
    arms: list[StudyArm]
    seeds: int = Field(ge=1, le=100)  # runs per arm, seeds seed, seed+1, ...: the same for every arm
    reference: str | None  # the arm the others are compared with (an arm's name); None: the first arm


class ParamSpec(Section):
    """One searched config key: a float or int range (``log`` scale, ``step`` grid), a choice or a bool."""

    type: Literal["float", "int", "choice", "bool"]
    min: float | None = None
    max: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    values: list[Any] = Field(default_factory=list)  # choice only

    @model_validator(mode="after")
    def _bounds_fit_type(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.min is None or self.max is None or self.min >= self.max:
                raise ValueError(f"a {self.type} range needs min < max, got min={self.min} max={self.max}")
            if self.log and self.min <= 0:
                raise ValueError(f"a log range needs min > 0, got min={self.min}")
        if self.type == "choice" and not self.values:
            raise ValueError("a choice needs a non-empty list of values")
        return self


class TuneConfig(Section):
    """The ``tune`` stage: KerasTuner over ``space`` (dotted config keys), objective val_accuracy."""

    tuner: TunerName  # hyperband, bayesian, random
    max_trials: int = Field(ge=1)  # bayesian, random (hyperband's budget is max_epochs and factor)
    max_epochs: int = Field(ge=1)  # epochs of a full trial (every trial for bayesian/random)
    executions_per_trial: int = Field(ge=1)
    factor: int = Field(ge=2)  # hyperband: keep 1/factor of the trials per round
    hyperband_iterations: int = Field(ge=1)
    directory: str  # KerasTuner project folders: delete one to start that search afresh
    project: str | None  # default: <tuner>-<digest of the searched config>, so reruns resume
    output: str  # the best hyperparameters, for `train -c`
    experiment: str
    space: dict[str, ParamSpec]
    trial_timeout: float = Field(gt=0)  # seconds; chief: a worker silent this long loses its trial


class Config(Section):
    seed: int
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    ensemble: EnsembleConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    tracking: TrackingConfig
    server: ServerConfig
    diagnostics: DiagnosticsConfig
    study: StudyConfig
    tune: TuneConfig

    @model_validator(mode="after")
    def _members_fit_size(self) -> Config:
        if self.ensemble.members and len(self.ensemble.members) != self.ensemble.size:
            raise ValueError(
                f"ensemble.members lists {len(self.ensemble.members)} members "
                f"but ensemble.size is {self.ensemble.size}"
            )
        return self


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        replacement = REPLACED_KEYS.get(key)
        return f"unknown config key {key!r}" + (f": use {replacement}" if replacement else "")
    if first["type"] in ("missing_extra", "format_twice"):  # the message names the value already
        return f"{key} {message}"
    key = key if key.isprintable() else repr(key)  # keys of free-form mappings may hold anything
    if not key:  # a check across keys (a model validator): the input is the whole config, not worth printing
        return f"invalid config: {message}"
    return f"invalid config value {key}={first.get('input')!r}: {message}"


@contextlib.contextmanager
def _typed_by_user(what: str) -> Iterator[None]:
    """Turn any failure to parse or merge text a user typed into one ConfigError line naming ``what``.

    OmegaConf and PyYAML raise many types on odd strings (their own, but also IndexError, TypeError
    or ValueError for keys like ``[=`` or lists merged into mappings); each means the input is wrong.
    """
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring; tests/test_config_fuzz.py covers these inputs
        raise ConfigError(f"{what}: {first_line(exc)}") from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with _typed_by_user(f"malformed YAML in {path}"):  # also a bare scalar ("0"), binary junk
        loaded = OmegaConf.load(path)
    if not isinstance(loaded, DictConfig):
        kind = type(loaded).__name__.removesuffix("Config").lower()
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {kind}")
    return loaded


def _parse_override(item: str) -> Any:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
    with _typed_by_user(f"bad override {item!r}"):
        return OmegaConf.from_dotlist([item])


def packaged_configs() -> list[str]:
    """The names ``-c`` accepts for the configs shipped with the package (``quick``, ``studies/activations``...)."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """The file ``-c name`` means: an existing file wins; otherwise a packaged config, named with or
    without ``.yaml`` and with or without a leading ``configs/`` (so README commands work from any folder).

    Raises ConfigError naming ``name`` and the packaged configs when neither exists.
    """
    given = Path(name).expanduser()
    if given.is_file():
        return given
    stem = given.as_posix().removeprefix("configs/")
    for candidate in (CONFIG_DIR / stem, CONFIG_DIR / f"{stem}.yaml"):
        if candidate.is_file() and CONFIG_DIR in candidate.resolve().parents:
            return candidate
    raise ConfigError(f"config file not found: {name} (no such file, and no packaged config of that name; "
                      f"packaged: {', '.join(packaged_configs())})")


def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Merge the default config, ``files`` in order and ``overrides`` (``a.b=value``), then validate.

    The default file is always the base, so an experiment file states only what differs. ``files``
    are paths or packaged config names (:func:`resolve_config_path`).
    Raises ConfigError naming the file, dotted key or value at fault.
    """
    paths = [resolve_config_path(f) for f in files or []]
    layers = [_read_yaml(DEFAULT_CONFIG)]
    layers += [_read_yaml(p) for p in paths if p.resolve() != DEFAULT_CONFIG.resolve()]
    layers += [_parse_override(o) for o in overrides or []]
    with _typed_by_user("cannot merge configs"):
        merged = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True)
    return validate_config(merged)


@functools.cache
def _defaults() -> Config:
    return load_config()


def defaults() -> Config:
    """The default config (``configs/default.yaml`` alone), as a fresh copy the caller may change."""
    return _defaults().model_copy(deep=True)


def validate_config(data: Any) -> Config:
    """Validate a plain mapping into a :class:`Config`, refusing unknown keys and bad values."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of ``cfg`` with dotted-key ``overrides`` applied and validated again."""
    base = OmegaConf.create(cfg.model_dump())
    with _typed_by_user(f"bad overrides {overrides!r}"):
        patch = OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()])
        merged = OmegaConf.to_container(OmegaConf.merge(base, patch), resolve=True)
    return validate_config(merged)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, the form logged to MLflow and accepted back by ``-c``."""
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False)


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted keys to values (``train.optimizer.lr``), the form MLflow params take."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", cfg.model_dump())
    return out
