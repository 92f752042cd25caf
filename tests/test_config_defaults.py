"""One place for every default (configs/default.yaml), configs that ship with the package, and `mnist99 config show`."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mnist99 import config
from mnist99.config import (
    DEFAULT_CONFIG,
    Config,
    MemberConfig,
    ParamSpec,
    StudyArm,
    defaults,
    load_config,
    resolve_config_path,
)
from mnist99.errors import ConfigError
from tests.conftest import ROOT

# List items: default.yaml holds empty lists, so these fields keep their defaults in the schema.
ITEM_SCHEMAS = (MemberConfig, StudyArm, ParamSpec)


def sections(model: type[BaseModel], prefix: str = ""):
    """Every (dotted key, field) of the schema, sections included."""
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from sections(annotation, f"{prefix}{name}.")


def test_the_schema_holds_no_default_so_it_cannot_drift_from_default_yaml():
    with_default = [key for key, field in sections(Config)
                    if field.default is not PydanticUndefined or field.default_factory is not None]
    assert with_default == [], f"defaults belong in configs/default.yaml only: {with_default}"


def test_default_yaml_alone_is_a_whole_valid_config():
    """With no defaults in the schema, validating the file alone proves it names every key."""
    assert config.validate_config(yaml.safe_load(DEFAULT_CONFIG.read_text())) == defaults()


def test_a_key_missing_from_the_merged_config_is_an_error_naming_it():
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    del raw["train"]["optimizer"]["lr"]
    with pytest.raises(ConfigError, match=r"train\.optimizer\.lr"):
        config.validate_config(raw)


def test_list_item_schemas_are_the_only_ones_with_defaults():
    for schema in ITEM_SCHEMAS:
        assert any(f.default is not PydanticUndefined or f.default_factory for f in schema.model_fields.values())
    assert MemberConfig().seed is None and StudyArm(name="a").overrides == {}


@pytest.mark.parametrize("name", ["quick", "quick.yaml", "configs/quick.yaml", "default", "gpu", "mlp",
                                  "studies/activations", "studies/activations.yaml"])
def test_packaged_configs_resolve_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_config_path(name)
    assert config.CONFIG_DIR in path.resolve().parents or path.resolve().parent == config.CONFIG_DIR.resolve()
    assert load_config([name]) == load_config([path])


def test_an_existing_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").write_text("seed: 7\n")
    assert load_config(["quick"]).seed == 7


def test_an_unknown_config_name_lists_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file not found: nope .*packaged: .*default.*quick"):
        load_config(["nope"])


def test_configs_in_the_checkout_are_the_packaged_ones():
    assert (ROOT / "configs").resolve() == config.CONFIG_DIR.resolve()


def test_config_show_prints_the_resolved_config_that_loads_back(tmp_path, monkeypatch, capsys):
    from mnist99.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "-c", "quick", "--set", "train.epochs=3"]) == 0
    shown = capsys.readouterr().out
    path = tmp_path / "shown.yaml"
    path.write_text(shown)
    assert load_config([path]) == load_config(["quick"], ["train.epochs=3"])
    assert "# merged: " in shown and "quick.yaml" in shown and "--set train.epochs=3" in shown


def test_version_and_help_answer_without_tensorflow(tmp_path):
    code = ("import sys; from mnist99.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    from mnist99 import __version__

    assert out.stdout.splitlines() == [f"mnist99 {__version__}", "False"], out.stderr
