"""The search space: ``tune.space`` specs declared as KerasTuner hyperparameters, and their values turned back into a Config.

Hyperparameters are named by their dotted config key (``train.optimizer.lr``), so a trial's values are
plain ``with_overrides`` patches and the model code never learns that it is being tuned.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import keras_tuner
import yaml

from mnist99.config import Config, ParamSpec, defaults, flatten, with_overrides
from mnist99.errors import ConfigError
from mnist99.registry import Registry

SPECS: Registry = Registry("search space type")


def _default(spec: ParamSpec, current: Any) -> Any:
    """The base config's value when the spec allows it, so the default trial is the base config."""
    if spec.type == "choice":
        return current if current in spec.values else None
    if spec.type == "bool":
        return bool(current)
    return current if isinstance(current, (int, float)) and spec.min <= current <= spec.max else None


@SPECS.register("float")
def _float(hp: keras_tuner.HyperParameters, key: str, spec: ParamSpec, default: Any):
    return hp.Float(key, spec.min, spec.max, step=spec.step, sampling="log" if spec.log else "linear",
                    default=default)


@SPECS.register("int")
def _int(hp: keras_tuner.HyperParameters, key: str, spec: ParamSpec, default: Any):
    return hp.Int(key, int(spec.min), int(spec.max), step=int(spec.step) if spec.step else None,
                  sampling="log" if spec.log else "linear", default=None if default is None else int(default))


@SPECS.register("choice")
def _choice(hp: keras_tuner.HyperParameters, key: str, spec: ParamSpec, default: Any):
    return hp.Choice(key, spec.values, default=default)


@SPECS.register("bool")
def _bool(hp: keras_tuner.HyperParameters, key: str, spec: ParamSpec, default: Any):
    return hp.Boolean(key, default=default)


def declare(hp: keras_tuner.HyperParameters, cfg: Config) -> dict[str, Any]:
    """Declare every ``cfg.tune.space`` entry on ``hp``; returns the values ``hp`` gives them now."""
    current = flatten(cfg)
    return {key: SPECS.get(spec.type)(hp, key, spec, _default(spec, current.get(key)))
            for key, spec in cfg.tune.space.items()}


def trial_config(cfg: Config, hp: keras_tuner.HyperParameters) -> Config:
    """The ordinary Config one trial trains: the base config, the trial's values, ``tune.max_epochs`` epochs.

    The schedule spans ``max_epochs`` in every trial, so a Hyperband trial that resumes a shorter
    one continues the same learning-rate curve.
    """
    values = declare(hp, cfg)
    return with_overrides(cfg, {**values, "train.epochs": cfg.tune.max_epochs})


def check_space(cfg: Config) -> None:
    """Fail before any training if the space is empty, names a key the config lacks, or has a bound the schema refuses."""
    if not cfg.tune.space:
        raise ConfigError("tune.space is empty: give a search space, e.g. -c configs/tune.yaml")
    for key, spec in cfg.tune.space.items():
        if key.startswith("tune.") or key == "seed":
            raise ConfigError(f"tune.space key '{key}' cannot be searched (it configures the search itself)")
        candidates = spec.values if spec.type == "choice" else [True] if spec.type == "bool" else [spec.min, spec.max]
        for value in candidates:
            try:
                with_overrides(cfg, {key: int(value) if spec.type == "int" else value})
            except ConfigError as exc:
                raise ConfigError(f"tune.space['{key}']: {exc}") from None


def best_overrides(cfg: Config, values: dict[str, Any]) -> dict[str, Any]:
    """The searched keys whose best value differs from ``cfg``: what a tuned config file must state."""
    best = flatten(with_overrides(cfg, {k: v for k, v in values.items() if k in cfg.tune.space}))
    base = flatten(cfg)
    return {key: best[key] for key in cfg.tune.space if best[key] != base[key]}


def overrides_yaml(overrides: dict[str, Any], header: str = "") -> str:
    """Dotted overrides as nested YAML (the form ``-c`` takes), under a comment ``header``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    body = yaml.safe_dump(nested, sort_keys=False) if nested else "{}\n"
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + body


def search_digest(cfg: Config) -> str:
    """8 hex digits of what defines a search (space, budget, base model/data/training), for the project name.

    Output paths, tracking, verbosity and the chief's trial timeout are left out, so the same search gets
    the same project folder (and resumes) wherever it writes its results; so are values equal to ``configs/default.yaml``'s,
    so adding a config key with its default value leaves the digest, and the folders of existing
    searches, unchanged.
    """
    skipped = ("tracking.", "export.", "ensemble.", "study.", "data.path", "data.cache_dir", "train.verbose",
               "tune.output", "tune.directory", "tune.project", "tune.experiment", "tune.trial_timeout")
    base = flatten(defaults())
    differs = {key: value for key, value in flatten(cfg).items()
               if not key.startswith(skipped) and (key not in base or base[key] != value)}
    text = json.dumps(differs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def project_name(cfg: Config) -> str:
    return cfg.tune.project or f"{cfg.tune.tuner}-{search_digest(cfg)}"
