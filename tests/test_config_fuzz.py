"""Property tests: any ``--set key=value`` (or override dict) gives a valid Config or a ConfigError, nothing else."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist99.config import Config, defaults, flatten, load_config, with_overrides
from mnist99.errors import ConfigError

KEYS = sorted(flatten(defaults()))
# Values that reach every branch: numbers, bools, nulls, YAML/OmegaConf syntax, interpolations, junk.
SPECIAL = ["", "null", "~", "true", "no", "0", "-1", "1e400", "nan", "inf", "-.inf", "0x10", "[1, 2]", "{a: 1}",
           "[", "{", "}", "'", '"', "${seed}", "${nope}", "${oc.env:HOME}", "${oc.env:NOPE_NOT_SET}",
           "${oc.decode:'[1'}", "${", "$", "\\", "a=b", "!!python/object/apply:os.system ['true']", "\x00", "é"]

keys = st.one_of(st.sampled_from(KEYS),
                 st.builds(lambda k, tail: f"{k}.{tail}", st.sampled_from(KEYS), st.sampled_from(["x", "0", "[0]"])),
                 st.text(st.sampled_from("abcdez._[]0-$ {}'\"="), max_size=20),
                 st.text(max_size=20))
values = st.one_of(st.sampled_from(SPECIAL), st.integers(-10**20, 10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=30))
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), st.text(max_size=40))
FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def config_or_config_error(build) -> None:
    try:
        cfg = build()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(str(exc))
        return
    assert isinstance(cfg, Config)


@pytest.fixture(scope="module", autouse=True)
def registries_loaded():
    """The name validators import the model/optimiser/tuner registries (Keras) once; not inside a deadline."""
    load_config()


@FUZZ
@given(st.lists(overrides, max_size=3))
def test_any_set_overrides_give_a_config_or_a_config_error(items):
    config_or_config_error(lambda: load_config([], items))


@FUZZ
@given(keys, values)
def test_any_override_dict_gives_a_config_or_a_config_error(key, value):
    base = defaults()
    config_or_config_error(lambda: with_overrides(base, {key: value}))


@settings(max_examples=80, deadline=2000)
@given(st.text(max_size=200))
def test_any_yaml_file_gives_a_config_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    config_or_config_error(lambda: load_config([path]))
