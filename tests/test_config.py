import pytest

from mnist99.config import flatten, load_config, to_yaml, validate_config, with_overrides
from mnist99.errors import ConfigError
from tests.conftest import ROOT, SMOKE


def test_default_loads_and_files_merge_in_order():
    cfg = load_config([ROOT / "configs" / "mlp.yaml", SMOKE], ["train.epochs=2"])
    assert cfg.model.name == "resmlp"  # from mlp.yaml
    assert cfg.model.width == 8  # smoke.yaml wins over mlp.yaml
    assert cfg.train.epochs == 2  # --set wins over files
    assert cfg.train.optimizer.lr == 0.001  # from mlp.yaml, over the default
    assert cfg.train.optimizer.name == "adamw"  # not in mlp.yaml: the default stays


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.dropout=1.0", "model.dropout=1.0"),
        ("train.optimizer.lr=0", "train.optimizer.lr=0"),
        ("train.epochs=0", "train.epochs=0"),
        ("ensemble.size=0", "ensemble.size=0"),
        ("train.epochs=abc", "train.epochs='abc'"),
        ("model.colour=red", "unknown config key 'model.colour'"),
        ("train.jit_compile=maybe", "train.jit_compile"),
        ("export.saved_model=false",
         "unknown config key 'export.saved_model': use export.formats, a list such as [keras, saved_model]"),
        ("export.formats=[keras,tflite]", "unknown export format 'tflite' (valid: keras, litert, onnx, saved_model)"),
        ("export.formats=[onnx,keras,onnx]", "export.formats lists 'onnx' twice"),
        ("export.formats=[]", "export.formats=[]"),
        ("export.keep=0", "export.keep=0"),
        ("augment.lines.min_wave=4", "min_wave (4 px) must not exceed max_wave (3 px)"),
        ("augment.lines.across_width=0.5", "augment.lines.across_width"),
    ],
)
def test_bad_values_name_the_dotted_key(override, fragment):
    """One line that names the key (and for a replaced key, what to write instead)."""
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config([bad])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config([], ["train.epochs"])


def test_resolved_yaml_round_trips_and_flattens(tmp_path):
    cfg = load_config([SMOKE])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config([path]) == cfg
    flat = flatten(cfg)
    assert flat["train.optimizer.lr"] == cfg.train.optimizer.lr
    assert with_overrides(cfg, {"model.width": 4}).model.width == 4
    with pytest.raises(ConfigError):
        validate_config(["not", "a", "mapping"])


def test_a_lone_member_is_scored_with_its_own_test_time_shifts_and_an_ensemble_with_none():
    cfg = load_config(None, [])
    alone = [tuple(s) for s in cfg.ensemble.tta_shifts_alone]
    assert cfg.ensemble.shifts_for(1) == alone and len(alone) == 4
    assert cfg.ensemble.shifts_for(2) == [] and cfg.ensemble.shifts_for(3) == []
    chosen = load_config(None, ["ensemble.tta_shifts=[[0,2]]"])
    assert chosen.ensemble.shifts_for(1) == [(0, 2)] and chosen.ensemble.shifts_for(3) == [(0, 2)]  # the user's, always
    assert load_config(None, ["ensemble.tta_shifts_alone=[]"]).ensemble.shifts_for(1) == []
    with pytest.raises(ConfigError, match="ensemble.tta_shifts_alone"):
        load_config(None, ["ensemble.tta_shifts_alone=[[0,5]]"])
