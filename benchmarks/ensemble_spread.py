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

Members that differ: each ``--pool "KEY=VALUE ..."`` is a pool, the config with those overrides on top
(``tracking.uri`` among them when a pool trained in another store), and the ensembles take one member
from each pool, every member of another seed (so no two share an initialisation and a data order):

    python benchmarks/ensemble_spread.py --pool "model.width=40" --pool "model.depth=3" --pool ""

Members of one config trained in several stores (other machines, other folders): each ``--store URI``
(repeatable) adds that store's matching members to this one's, and every ``--size``-subset of them all is
scored, again no seed twice (a seed trained in two stores is one draw, not two).
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


def pool_members(cfg: Config) -> tuple[list, dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """One pool: its matching FINISHED members (in its own store), their probabilities and the labels."""
    from mnist99.delivery.ensemble import predict_members
    from mnist99.delivery.loading import load_run_model

    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    found = tracking.matching_train_runs(member_keys(cfg), tracking.split_digest(splits.x_val, splits.y_val))
    models = [load_run_model(run.info.run_id) for run in found]
    probs = {"val": predict_members(models, splits.x_val), "test": predict_members(models, splits.x_test)}
    return found, probs, {"val": splits.y_val, "test": splits.y_test}


def distinct_seeds(combo: tuple[tuple[int, int], ...], seeds: list[list[str]]) -> bool:
    """Whether the members (pool, index) of ``combo`` all have different seeds."""
    return len({seeds[pool][i] for pool, i in combo}) == len(combo)


def mixed_subsets(seeds: list[list[str]]) -> list[tuple[tuple[int, int], ...]]:
    """One member (pool, index) from each pool, no seed twice."""
    indexed = [[(pool, i) for i in range(len(pool_seeds))] for pool, pool_seeds in enumerate(seeds)]
    return [combo for combo in itertools.product(*indexed) if distinct_seeds(combo, seeds)]


def union_subsets(seeds: list[list[str]], size: int) -> list[tuple[tuple[int, int], ...]]:
    """Every ``size`` members (pool, index) of all pools together (one store, or several), no seed twice."""
    members = [(pool, i) for pool, pool_seeds in enumerate(seeds) for i in range(len(pool_seeds))]
    return [combo for combo in itertools.combinations(members, size) if distinct_seeds(combo, seeds)]


def main() -> None:
    parser = config_arguments(__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="members per ensemble (default 3; with --pool, the number of pools)")
    parser.add_argument("--target", type=float, default=0.997, help="test accuracy to count (default 0.997)")
    parser.add_argument("--pool", action="append", default=[], metavar='"KEY=VALUE ..."',
                        help="a pool of members: these overrides on top of the config (repeatable)")
    parser.add_argument("--store", action="append", default=[], metavar="URI",
                        help="another tracking store whose members of this config join this one's (repeatable)")
    args = parser.parse_args()
    if args.pool and args.size not in (None, len(args.pool)):
        parser.error(f"--size {args.size} with {len(args.pool)} --pool: an ensemble takes one member per pool")
    if args.pool and args.store:
        parser.error("--store with --pool: give each pool its store as tracking.uri=URI")
    args.size = len(args.pool) or args.size or 3
    base = [*args.overrides]
    pools = [base + text.split() for text in args.pool] or [base, *(base + [f"tracking.uri={uri}"] for uri in args.store)]
    found, probs, labels, loaded = [], {"val": [], "test": []}, None, {}
    for overrides in pools:
        if tuple(overrides) not in loaded:  # a pool given twice (two members of one config) loads once
            cfg = load_config(args.config, overrides)
            loaded[tuple(overrides)] = (cfg, *pool_members(cfg))
        cfg, runs, pool_probs, pool_labels = loaded[tuple(overrides)]
        need = 1 if args.pool or args.store else args.size
        if len(runs) < need:
            sys.exit(f"ensemble_spread: {len(runs)} matching FINISHED train runs in {tracking.tracking_uri(cfg)} "
                     f"for --set {' '.join(overrides) or '(none)'}, need at least {need}")
        if labels is not None and any(not np.array_equal(labels[s], pool_labels[s]) for s in labels):
            sys.exit(f"ensemble_spread: the pool {' '.join(overrides)} holds out another validation split "
                     f"(seed, data.val_size): pools must share one")
        labels = pool_labels
        found.append(runs)
        for s in probs:
            probs[s].append(pool_probs[s])
    seeds = [[run.data.params.get("seed") for run in runs] for runs in found]
    flat = [(pool, i) for pool, runs in enumerate(found) for i in range(len(runs))]
    subsets = mixed_subsets(seeds) if args.pool else union_subsets(seeds, args.size)
    everyone = score({s: [probs[s][p][i] for p, i in flat] for s in probs}, labels, member_weights(len(flat)))
    members = [{"run_id": found[p][i].info.run_id, "seed": seeds[p][i],
                **({"pool": args.pool[p]} if args.pool else {}),
                **{f"{s}_accuracy": everyone[f"member_{n}_{s}_accuracy"] for s in probs}}
               for n, (p, i) in enumerate(flat, start=1)]
    scored = [score({s: [probs[s][p][i] for p, i in subset] for s in probs}, labels, member_weights(args.size))
              for subset in subsets]
    if not scored:
        sys.exit(f"ensemble_spread: no ensemble of {args.size} members with every seed different "
                 f"among {len(flat)} members")
    ensembles = {s: [subset[f"{s}_accuracy"] for subset in scored] for s in probs}
    print(json.dumps({"members": members, "size": args.size, "subsets": len(subsets),
                      **{f"{s}_accuracy": spread(ensembles[s], args.target) for s in ensembles}}))


if __name__ == "__main__":
    main()
