"""How reliable is a k-model ensemble of one config? Every k-subset of its finished members, scored.

    MNIST99_DATA=../shared/data/mnist python benchmarks/ensemble_spread.py -c configs/default.yaml [--size 3]

One ``mnist99 run`` is a single draw: members of one config differ by ~0.1% from seed to seed, so one
ensemble figure says little about the next.
This scores every ``--size``-subset of the members already in the store -- FINISHED train runs whose
logged config matches this one's in every key a member's training reads (``model``, ``augment``,
``train`` but its verbosity and checkpoint folder, ``data.val_size``/``train_limit``; not the seed),
and whose logged validation split is this config's -- on the validation and test splits, and prints
one JSON line: each member's accuracies, and over the subsets min / median / mean / max and the share
at or above ``--target``. A key a run did not log (a run of an older mnist99) is not compared. Trains
nothing: the members come from earlier ``mnist99 run`` / ``ensemble`` / ``train`` runs.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import config_arguments  # noqa: E402

from mnist99 import tracking  # noqa: E402
from mnist99.config import Config, flatten, load_config  # noqa: E402
from mnist99.data import make_splits  # noqa: E402
from mnist99.delivery.ensemble import member_weights, score  # noqa: E402

IGNORED = {"train.verbose", "train.checkpoint_dir"}  # change nothing a member learns


def member_keys(cfg: Config) -> dict[str, str]:
    """The logged params (as strings) that a member's training depends on, the seed left out."""
    wanted = ("model.", "augment.", "train.", "data.val_size", "data.train_limit")
    return {k: ("" if v is None else str(v)) for k, v in flatten(cfg).items()
            if k.startswith(wanted) and k not in IGNORED}


def spread(accuracies: list[float], target: float) -> dict:
    values = np.asarray(accuracies)
    return {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": float(values.max()), f"share_at_least_{target}": float(np.mean(values >= target - 1e-9))}


def main() -> None:
    parser = config_arguments(__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3, help="members per ensemble (default 3)")
    parser.add_argument("--target", type=float, default=0.997, help="test accuracy to count (default 0.997)")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    found = tracking.matching_train_runs(member_keys(cfg), tracking.split_digest(splits.x_val, splits.y_val))
    if len(found) < args.size:
        sys.exit(f"ensemble_spread: {len(found)} matching FINISHED train runs in {tracking.tracking_uri(cfg)}, "
                 f"need at least --size {args.size}")
    from mnist99.delivery.ensemble import predict_members
    from mnist99.delivery.loading import load_run_model

    models = [load_run_model(run.info.run_id) for run in found]
    probs = {"val": predict_members(models, splits.x_val), "test": predict_members(models, splits.x_test)}
    labels = {"val": splits.y_val, "test": splits.y_test}
    everyone = score(probs, labels, member_weights(len(models)))  # the ensemble stage's own scoring
    members = [{"run_id": run.info.run_id, "seed": run.data.params.get("seed"),
                **{f"{s}_accuracy": everyone[f"member_{i}_{s}_accuracy"] for s in probs}}
               for i, run in enumerate(found, start=1)]
    subsets = list(itertools.combinations(range(len(models)), args.size))
    scored = [score({s: [probs[s][i] for i in subset] for s in probs}, labels, member_weights(args.size))
              for subset in subsets]
    ensembles = {s: [subset[f"{s}_accuracy"] for subset in scored] for s in probs}
    print(json.dumps({"members": members, "size": args.size, "subsets": len(subsets),
                      **{f"{s}_accuracy": spread(ensembles[s], args.target) for s in ensembles}}))


if __name__ == "__main__":
    main()
