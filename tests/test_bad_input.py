"""Every bad input of docs/RELIABILITY.md through the real ``mnist99`` command (in-process).

Each case must exit 2, print exactly one stderr line ``mnist99 <stage>: error: ...`` naming the
problem (no traceback) and nothing on stdout, and leave every file under the test folder as it was:
the MLflow store, the exports, the data cache and the inputs themselves.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mnist99.cli import main
from mnist99.errors import ConfigError
from tests.conftest import SMOKE, real_data_dir, require_real_data
from tests.test_images import bad_files, drawn_seven

LABELS = "t10k-labels-idx1-ubyte.gz"
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", LABELS)


def mnist_copy(folder: Path, labels: bytes | None) -> None:
    """``folder`` with links to three real MNIST files and, as the fourth, ``labels`` (None: missing)."""
    folder.mkdir()
    for name in IDX_NAMES[:3]:
        (folder / name).symlink_to(real_data_dir() / name)
    if labels is not None:
        (folder / LABELS).write_bytes(labels)


def write_data_inputs(root: Path) -> None:
    (root / "empty_dir").mkdir()
    np.savez(root / "keys.npz", images=np.zeros(3))
    np.savez(root / "shapes.npz", x_train=np.zeros((5, 28, 28), np.uint8), y_train=np.zeros(5, np.uint8),
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
    np.savez(root / "pickle.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(5, np.uint8),
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "mnist.txt").write_text("not MNIST\n")
    if real_data_dir() is None:
        return
    raw = (real_data_dir() / LABELS).read_bytes()
    mnist_copy(root / "three_files", None)
    mnist_copy(root / "truncated", raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[100] ^= 0xFF
    mnist_copy(root / "flipped", bytes(flipped))
    mnist_copy(root / "magic", gzip.compress(b"\x00\x00\x08\x02" + gzip.decompress(raw)[4:]))


def write_images(root: Path) -> None:
    bad_files(root)  # the same bad files test_images checks one by one
    drawn_seven().save(root / "seven.png")
    drawn_seven(ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA").save(root / "rgba.png")
    drawn_seven().convert("P").save(root / "palette.png")
    gray = np.asarray(drawn_seven().convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(root / "sixteen.png")
    assert Image.open(root / "sixteen.png").mode.startswith("I")


def write_models(root: Path) -> None:
    import keras

    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    keras.Model(digits, keras.layers.Dense(10, activation="softmax")(x)).save(root / "tiny.keras")
    floats = keras.Input((28, 28, 1))
    keras.Model(floats, keras.layers.Lambda(lambda t: t * 2.0)(floats)).save(root / "lambda.keras")
    (root / "corrupt.keras").write_bytes(b"not a zip archive")
    (root / "model.h5").write_bytes(b"x")
    (root / "two_models").mkdir()
    for name in ("a.keras", "b.keras"):
        (root / "two_models" / name).write_bytes((root / "tiny.keras").read_bytes())
    (root / "exports").mkdir()
    (root / "exports" / "mnist99-ensemble.keras").write_bytes((root / "tiny.keras").read_bytes())


def write_store(root: Path) -> tuple[str, str]:
    """A store holding one FINISHED train run (no ensemble), as a user's store after ``mnist99 train``."""
    from mnist99 import tracking
    from mnist99.config import load_config

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    cfg = load_config([SMOKE], [f"tracking.uri={uri}", "tracking.system_metrics=false"])
    tracking.setup(cfg)
    with tracking.stage_run(cfg, "train", "train-existing") as active:
        tracking.log_metrics({"test_accuracy": 0.5})
    (root / "afile").write_text("a file, not a folder\n")
    (root / "notadb.db").write_bytes(b"this is not a SQLite database " * 10)
    (root / "adir").mkdir()
    return uri, active.info.run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a store, an export, the bad inputs and a data cache path; base args pointing at them."""
    root = tmp_path_factory.mktemp("bad_input")
    config_files(root)
    write_data_inputs(root)
    write_images(root)
    write_models(root)
    uri, run_id = write_store(root)
    base = ["-c", str(SMOKE), "--set", f"tracking.uri={uri}", "--set", f"data.cache_dir={root / 'cache'}",
            "--set", f"export.dir={root / 'exports'}", "--set", f"train.checkpoint_dir={root / 'ckpt'}",
            "--set", "tracking.system_metrics=false"]
    return SimpleNamespace(root=root, base=base, run_id=run_id)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) with the sha256 of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink()
            else "dir-or-link" for p in sorted(root.rglob("*"))}


NEEDS_MNIST = "needs_mnist"
# (id, stage, arguments, what stderr must contain). "{root}": the fixture's folder; "{good}": a good image.
CASES = [
    # config
    ("config-unknown-key", "prepare", ["--set", "model.colour=red"], "unknown config key 'model.colour'"),
    ("config-wrong-type", "prepare", ["--set", "train.epochs=abc"],
     "invalid config value train.epochs='abc': Input should be a valid integer"),
    ("config-dropout-1", "prepare", ["--set", "model.dropout=1.0"],
     "invalid config value model.dropout=1.0: Input should be less than 1"),
    ("config-lr-0", "prepare", ["--set", "train.optimizer.lr=0"],
     "invalid config value train.optimizer.lr=0: Input should be greater than 0"),
    ("config-lr-negative", "prepare", ["--set", "train.optimizer.lr=-0.1"],
     "invalid config value train.optimizer.lr=-0.1: Input should be greater than 0"),
    ("config-epochs-0", "prepare", ["--set", "train.epochs=0"],
     "invalid config value train.epochs=0: Input should be greater than or equal to 1"),
    ("config-ensemble-size-0", "prepare", ["--set", "ensemble.size=0"],
     "invalid config value ensemble.size=0: Input should be greater than or equal to 1"),
    ("config-members-vs-size", "prepare", ["--set", "ensemble.size=3", "--set", "ensemble.members=[{{seed: 1}}]"],
     "invalid config: ensemble.members lists 1 members but ensemble.size is 3"),
    ("config-missing-file", "prepare", ["-c", "{root}/nope.yaml"], "config file not found: {root}/nope.yaml"),
    ("config-malformed-yaml", "prepare", ["-c", "{root}/malformed.yaml"], "malformed YAML in {root}/malformed.yaml"),
    ("config-yaml-list", "prepare", ["-c", "{root}/list.yaml"],
     "{root}/list.yaml must hold a mapping of config keys, not a list"),
    ("config-python-tag", "prepare", ["-c", "{root}/python_tag.yaml"],
     "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("config-not-key-value", "prepare", ["--set", "train.epochs"],
     "override 'train.epochs' is not of the form dotted.key=value"),
    ("config-bad-override-syntax", "prepare", ["--set", "model.width=["], "bad override 'model.width=['"),
    ("config-bad-member-override", "run", ["--set", "ensemble.size=1",
                                           "--set", "ensemble.members=[{{overrides: {{model.widht: 8}}}}]"],
     "unknown config key 'model.widht'"),
    ("config-unknown-model", "prepare", ["--set", "model.name=resnet"],
     "unknown model 'resnet' (valid: convnet, plaincnn, rescnn, resmlp)"),
    ("config-unknown-optimizer", "prepare", ["--set", "train.optimizer.name=adamax"],
     "unknown optimizer 'adamax' (valid: adagrad, adam, adamw, rmsprop, sgd)"),
    ("config-unknown-schedule", "prepare", ["--set", "train.schedule.name=linear"],
     "unknown schedule 'linear' (valid: constant, cosine, exponential, onecycle, step)"),
    ("config-unknown-tuner", "tune", ["--set", "tune.tuner=grid"],
     "unknown tuner 'grid' (valid: bayesian, hyperband, random)"),
    ("config-unknown-activation", "prepare", ["--set", "model.activation=tanhh"], "unknown activation 'tanhh'"),
    ("config-unknown-initializer", "prepare", ["--set", "model.initializer=zeros"], "unknown initializer 'zeros'"),
    # data
    ("data-missing-folder", "prepare", ["--set", "data.path={root}/nowhere"],
     "MNIST path does not exist: {root}/nowhere"),
    ("data-empty-folder", "prepare", ["--set", "data.path={root}/empty_dir"],
     "MNIST file missing: {root}/empty_dir/train-images-idx3-ubyte.gz"),
    ("data-one-file-missing", "prepare", ["--set", "data.path={root}/three_files"],
     f"MNIST file missing: {{root}}/three_files/{LABELS}", NEEDS_MNIST),
    ("data-truncated-gzip", "prepare", ["--set", "data.path={root}/truncated"],
     f"checksum mismatch for {{root}}/truncated/{LABELS}: expected sha256 ", NEEDS_MNIST),
    ("data-wrong-checksum", "prepare", ["--set", "data.path={root}/flipped"],
     f"checksum mismatch for {{root}}/flipped/{LABELS}: expected sha256 ", NEEDS_MNIST),
    ("data-wrong-idx-magic", "prepare", ["--set", "data.path={root}/magic"],
     f"checksum mismatch for {{root}}/magic/{LABELS}: expected sha256 ", NEEDS_MNIST),
    ("data-npz-wrong-keys", "prepare", ["--set", "data.path={root}/keys.npz"],
     "{root}/keys.npz lacks the arrays ['x_test', 'x_train', 'y_test', 'y_train'] (has ['images'])"),
    ("data-npz-wrong-shapes", "prepare", ["--set", "data.path={root}/shapes.npz"],
     "{root}/shapes.npz: x_train is uint8(5, 28, 28), expected uint8(60000, 28, 28)"),
    ("data-npz-with-pickle", "prepare", ["--set", "data.path={root}/pickle.npz"],
     "{root}/pickle.npz is not a readable npz file (Object arrays cannot be loaded when allow_pickle=False)"),
    ("data-npz-corrupt", "prepare", ["--set", "data.path={root}/garbage.npz"],
     "{root}/garbage.npz is not a readable npz file"),
    ("data-not-npz-or-folder", "prepare", ["--set", "data.path={root}/mnist.txt"],
     "MNIST path {root}/mnist.txt is neither a folder of IDX files nor a .npz file"),
    # predict
    ("predict-folder", "predict", ["--model", "{root}/tiny.keras", "{root}/folder.png"],
     "{root}/folder.png: is a folder, not an image file"),
    ("predict-missing-file", "predict", ["--model", "{root}/tiny.keras", "{root}/missing.png"],
     "{root}/missing.png: no such file"),
    ("predict-text-file", "predict", ["--model", "{root}/tiny.keras", "{root}/notes.txt"],
     "{root}/notes.txt: not an image Pillow can read"),
    ("predict-empty-file", "predict", ["--model", "{root}/tiny.keras", "{root}/empty.png"],
     "{root}/empty.png: empty file (0 bytes)"),
    ("predict-10000x10000", "predict", ["--model", "{root}/tiny.keras", "{root}/huge.png"],
     "{root}/huge.png: image too large: 10000x10000 is 100 megapixels, the limit is 50"),
    ("predict-corrupt-png", "predict", ["--model", "{root}/tiny.keras", "{root}/fake.png"],
     "{root}/fake.png: corrupt image"),
    ("predict-truncated-png", "predict", ["--model", "{root}/tiny.keras", "{good}", "{root}/truncated.png"],
     "{root}/truncated.png: corrupt image"),
    ("predict-blank-image", "predict", ["--model", "{root}/tiny.keras", "{root}/blank.png"],
     "{root}/blank.png: blank image: no ink stands out from the background"),
    # model
    ("model-missing-file", "predict", ["--model", "{root}/missing.keras", "{good}"],
     "model file not found: {root}/missing.keras"),
    ("model-corrupt-keras", "predict", ["--model", "{root}/corrupt.keras", "{good}"],
     "cannot load model {root}/corrupt.keras: "),
    ("model-lambda-layer", "predict", ["--model", "{root}/lambda.keras", "{good}"],
     "cannot load model {root}/lambda.keras: refused by Keras safe mode (it would run arbitrary code)"),
    ("model-not-keras", "predict", ["--model", "{root}/model.h5", "{good}"],
     "{root}/model.h5 is not a .keras, .onnx or .tflite file"),
    ("model-folder-of-two", "predict", ["--model", "{root}/two_models", "{good}"],
     "{root}/two_models is a folder with 2 .keras files, expected exactly one"),
    ("model-unknown-registered-name", "predict", ["--model", "models:/no-such-model/latest", "{good}"],
     "cannot fetch models:/no-such-model/latest: "),
    ("model-unknown-run", "export", ["--run-id", "0123456789abcdef0123456789abcdef"],
     "no MLflow run '0123456789abcdef0123456789abcdef'"),
    ("model-no-ensemble-to-export", "export", [], "no FINISHED ensemble run to export in this experiment"),
    # tracking
    ("tracking-store-in-proc", "export", ["--set", "tracking.uri=sqlite:////proc/nope/mlflow.db"],
     "cannot open the MLflow store sqlite:////proc/nope/mlflow.db: "),
    ("tracking-store-under-a-file", "export", ["--set", "tracking.uri=sqlite:///{root}/afile/mlflow.db"],
     "cannot open the MLflow store sqlite:///{root}/afile/mlflow.db: "),
    ("tracking-store-not-a-database", "export", ["--set", "tracking.uri=sqlite:///{root}/notadb.db"],
     "cannot open the MLflow store sqlite:///{root}/notadb.db: file is not a database"),
    ("tracking-store-is-a-folder", "export", ["--set", "tracking.uri=sqlite:///{root}/adir"],
     "cannot open the MLflow store sqlite:///{root}/adir: {root}/adir is a folder, expected a SQLite file"),
]


def config_files(root: Path) -> None:
    (root / "malformed.yaml").write_text("model: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "python_tag.yaml").write_text('seed: !!python/object/apply:os.system ["echo HACKED"]\n')


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, world, capsys):
    name, stage, args, expected, *flags = case
    if NEEDS_MNIST in flags:
        require_real_data()
    fill = {"root": world.root, "good": world.root / "seven.png"}
    args = [a.format(**fill) for a in args]
    before = snapshot(world.root)
    capsys.readouterr()
    code = main([stage, *world.base, *args])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"mnist99 {stage}: error: "), err
    assert expected.format(**fill) in err, err
    assert "Traceback" not in err
    assert snapshot(world.root) == before


@pytest.mark.parametrize("image", ["rgba.png", "palette.png", "sixteen.png"])
def test_odd_but_valid_pngs_are_predicted(image, world, capsys):
    """RGBA (transparent sheet), palette and 16-bit PNGs are accepted: one JSON line, exit 0."""
    capsys.readouterr()
    assert main(["predict", *world.base, "--model", str(world.root / "tiny.keras"), str(world.root / image)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == str(world.root / image) and 0 <= record["digit"] <= 9


def test_debug_shows_the_traceback(world):
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        main(["prepare", *world.base, "--set", "model.name=resnet", "--debug"])
