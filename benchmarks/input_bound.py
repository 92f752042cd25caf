"""Does the model or the input bound a training step? Training images/s measured three ways, one process.

    MNIST99_DATA=../shared/data/mnist python benchmarks/input_bound.py -c configs/default.yaml [--steps 150]

1. ``input_only``: the host training pipeline exactly as ``mnist99 train`` builds it (uint8 ->
   float and augmentation in a ``map`` that takes one batch at a time, prefetch), iterated with no model;
2. ``model_only``: the net alone, ``fit`` on a few batches from that pipeline cached in memory and
   repeated, so the step does no input work at all;
3. ``fit``: what training runs -- the pipeline feeding the model, or, with
   ``--set train.data_on_device=true``, index batches feeding the
   :class:`~mnist99.training.augmented_net.AugmentedNet` that gathers and augments inside the step.

If ``fit`` runs at (nearly) the ``model_only`` rate, the model bounds the step; ``input_share`` =
1 - fit / model_only is what the input work (wherever it runs) costs the step. ``input_only`` runs
with every core to itself, so ``input_headroom`` (input_only / model_only) says how far the pipeline
is from being the bottleneck. Each is timed over ``--steps`` steps after as many warm-up steps
(tracing, tf.data's autotuning), in ``--rounds`` interleaved rounds; the summary takes medians.

Prints one JSON line per measurement and a summary line (median rates, ``input_share``,
``bound_by``). Not a test: reported, never asserted.
"""
from __future__ import annotations

import json
import platform
import statistics
import time

import psutil
from train_speed import config_arguments

from mnist99.config import load_config
from mnist99.data import make_splits


def fit_rate(wrapped, dataset, steps: int, batch: int) -> float:
    """Training images/s of ``fit`` over ``steps`` steps, after a first ``fit`` of as many to warm up."""
    wrapped.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    start = time.perf_counter()
    wrapped.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def input_rate(dataset, steps: int, batch: int) -> float:
    """Images/s of iterating ``dataset`` alone, after ``steps`` warm-up batches."""
    batches = iter(dataset)
    for _ in range(steps):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = config_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="timed steps per measurement (and as many to warm up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three; the summary takes medians")
    parser.add_argument("--cached-batches", type=int, default=8, help="batches cached for the model-only run")
    args = parser.parse_args()
    from mnist99.training.fit import fit_datasets, set_up  # TensorFlow

    cfg = load_config(args.config, args.overrides)
    splits = make_splits(cfg.data, cfg.seed)
    setup = set_up(cfg, splits)
    host = fit_datasets(cfg, splits, on_device=False)[0] if setup.data_on_device else setup.train_ds
    batch, steps = cfg.train.batch_size, args.steps
    where = {"machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores",
             "data_on_device": setup.data_on_device, "batch": batch, "steps": steps}
    cached = host.take(args.cached_batches).cache().repeat()
    measured: dict[str, list[float]] = {"input_only": [], "model_only": [], "fit": []}
    for round_ in range(1, args.rounds + 1):  # interleaved: this machine's speed drifts over minutes
        for what, rate in (("input_only", lambda: input_rate(host.repeat(), steps, batch)),
                           ("model_only", lambda: fit_rate(setup.model, cached, steps, batch)),
                           ("fit", lambda: fit_rate(setup.fitted, setup.train_ds.repeat(), steps, batch))):
            measured[what].append(rate())
            print(json.dumps({"what": what, "round": round_, "images_per_s": measured[what][-1], **where}), flush=True)
    rates = {what: statistics.median(values) for what, values in measured.items()}
    share = 1 - rates["fit"] / rates["model_only"]
    print(json.dumps({"what": "summary", **{f"{what}_images_per_s": rate for what, rate in rates.items()},
                      "input_share": share, "bound_by": "model" if share < 0.1 else "input",
                      "input_headroom": rates["input_only"] / rates["model_only"], **where}))


if __name__ == "__main__":
    main()
