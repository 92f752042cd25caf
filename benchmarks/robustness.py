"""Accuracy under the MNIST-C-style corruptions (mnist99.data.corruptions), any models side by side.

    MNIST99_DATA=../shared/data/mnist python benchmarks/robustness.py --baseline \
        --model runs:/<train run id>/model/model.keras --model exports/mnist99-ensemble.keras

Prints a markdown table (docs/ROBUSTNESS.md): a row per corruption (seen or held-out family), then
clean, the mean over corruptions, the worst, the seen and unseen means; a column per model, in
percent. ``--model`` takes what ``mnist99.load_ensemble`` takes (a ``.keras`` file, ``runs:/...``,
``models:/...``); ``--examples PNG`` draws the corrupted digits; ``--baseline`` first trains the Keras example convnet exactly as
``benchmarks/train_speed.py`` does (15 epochs: ~2.5 min on a 2-core AVX-512 CPU) and scores it too.
The digits are the evaluate stage's: ``evaluate.robustness_size`` test digits picked and corrupted
with ``evaluate.robustness_seed`` (``--n`` and ``--seed`` override), so the table lines up with the
``robust/*`` metrics of evaluated runs. ``--split val`` picks them from the validation split instead:
the table to choose between recipes on, leaving the test set to report the chosen one. Not a test:
results are reported, never asserted.
"""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import baseline, baseline_model, config_arguments  # noqa: E402

from mnist99 import tracking  # noqa: E402
from mnist99.config import load_config  # noqa: E402
from mnist99.data import corruptions, make_splits  # noqa: E402
from mnist99.data.splits import stratified_subset  # noqa: E402
from mnist99.reports import plots, robustness  # noqa: E402
from mnist99.stages.evaluate import source_name  # noqa: E402
from mnist99.training.devices import cpu_model  # noqa: E402

SPLITS = {"test": "test", "val": "validation"}  # --split: the Splits part, and how the table names it


def draw_examples(images: np.ndarray, seed: int, path: str) -> None:
    """A PNG with a column per corruption (clean first), as the robustness report sees the digits (docs/corruptions.png)."""
    names = ["clean", *corruptions.names()]
    sets = np.stack([images] + [corruptions.corrupt(images, name, seed) for name in names[1:]], axis=1)
    captions = [name if i == 0 else "" for i in range(len(images)) for name in names]
    fig = plots.digit_grid(sets.reshape(-1, *images.shape[1:]), captions=captions, cols=len(names), value_range=(0, 255))
    fig.savefig(path, dpi=60)
    plots.close(fig)


def main() -> None:
    parser = config_arguments(__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="SOURCE", help="a model to score (repeatable)")
    parser.add_argument("--baseline", action="store_true", help="train and score the Keras example convnet")
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--n", type=int, help="test digits to corrupt (default: evaluate.robustness_size)")
    parser.add_argument("--examples", metavar="PNG", help="also draw 3 of the digits under each corruption")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="the digits to corrupt: test (what evaluate reports) or val (to decide on)")
    parser.add_argument("--seed", type=int,
                        help="picks the digits and the corruptions' draws (default: evaluate.robustness_seed)")
    args = parser.parse_args()
    if not (args.model or args.baseline or args.examples):
        parser.error("nothing to do: give --model SOURCE (repeatable), --baseline or --examples PNG")
    if args.baseline and args.split == "val":
        parser.error("--baseline trains on the validation digits too: score it with --split test")
    cfg = load_config(args.config, args.overrides)
    tracking.use_store(cfg)  # runs:/ and models:/ sources resolve against the configured store
    n = cfg.evaluate.robustness_size if args.n is None else args.n
    seed = cfg.evaluate.robustness_seed if args.seed is None else args.seed
    splits = make_splits(cfg.data, cfg.seed)
    images, labels = stratified_subset(*splits.parts()[args.split], n, seed)
    if args.examples:
        draw_examples(images[:3], seed, args.examples)
    models = {}  # column name -> a model, or a source loaded when it is scored
    if args.baseline:
        keras.utils.set_random_seed(cfg.seed)
        models["keras-convnet"] = model = baseline_model()
        trained = baseline(np.concatenate([splits.x_train, splits.x_val]), np.concatenate([splits.y_train, splits.y_val]),
                           splits.x_test, splits.y_test, args.baseline_epochs, every_steps=0, model=model)
        print(f"keras-convnet: {args.baseline_epochs} epochs, test accuracy {trained['test_accuracy']:.4f}")
    for source in args.model:
        models[source if source_name(source) in models else source_name(source)] = source
    if not models:
        return
    reports = {name: robustness.robustness(source, images, labels, seed=seed) for name, source in models.items()}
    print(f"\n{len(labels)} {SPLITS[args.split]} digits (seed {seed}) on {cpu_model()}\n")
    print(robustness.markdown(reports))


if __name__ == "__main__":
    main()
