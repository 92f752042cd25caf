"""Stage ``train``: one model, early-stopped on validation loss, everything logged to one MLflow run.

Reads: MNIST (see ``prepare``). Writes: an MLflow run with params (dotted config keys), per-epoch
metrics, ``test_accuracy`` & co., ``config.yaml``, ``model/model.keras`` and ``learning_curves.png``.
"""
from __future__ import annotations

from mnist99 import tracking
from mnist99.config import Config
from mnist99.data import Splits, make_splits
from mnist99.reports import plots
from mnist99.tracking import resume


def run_name(cfg: Config) -> str:
    return f"train-{cfg.model.name}-{cfg.train.optimizer.name}-s{cfg.seed}"


def train_in_run(cfg: Config, splits: Splits, nested: bool = False, name: str | None = None) -> dict:
    """Train one model inside its own (possibly nested) MLflow run; returns metrics, run id and model."""
    from mnist99.training import diagnostics
    from mnist99.training.fit import train_model

    tags = {"mnist99.model": cfg.model.name, "mnist99.optimizer": cfg.train.optimizer.name,
            tracking.CACHE_KEY_TAG: tracking.cache_key("train", cfg, splits.digest)}
    ckpt = resume.checkpoint_dir(cfg, splits.digest)
    resumed = tracking.unfinished_run(resume.pending_run_id(ckpt))
    with tracking.stage_run(cfg, "train", name or run_name(cfg), tags=tags, nested=nested, run_id=resumed) as active:
        resume.remember_run(ckpt, active.info.run_id)
        if resumed:
            print(f"train: resuming interrupted run {resumed} from its last finished epoch")
            tracking.set_tag("mnist99.resumed", "true")
        else:
            tracking.log_config(cfg)
            tracking.log_dataset(splits)
        callbacks = [tracking.MlflowEpochLogger(logged_until=tracking.last_step(active.info.run_id) if resumed else 0)]
        if cfg.diagnostics.enabled:
            callbacks.append(diagnostics.for_validation(cfg.diagnostics, splits,
                                                        log_fn=tracking.log_metrics, tag_fn=tracking.set_tag))
        result = train_model(cfg, splits, callbacks=callbacks, backup_dir=ckpt / "backup")
        if resumed:
            tracking.set_tag("mnist99.resumed_at_epoch", str(result.metrics["first_epoch"]))
        tracking.set_tag("mnist99.data_on_device", str(result.data_on_device).lower())  # what `auto` chose
        tracking.log_summary(result.model)
        final = {k: result.metrics.pop(k) for k in ("val_accuracy", "val_loss")}
        tracking.log_metrics(result.metrics)
        # The restored best model's validation score, one step after the last epoch, so the
        # curve's last point and the run's latest `val_accuracy` are the model that was kept.
        tracking.log_metrics(final, step=result.metrics["epochs_run"] + 1)
        result.metrics.update(final)
        fig = plots.learning_curves(result.history, title=run_name(cfg))
        tracking.log_figure(fig, "learning_curves.png")
        plots.close(fig)
        tracking.log_model_file(result.model)
    resume.clear(ckpt)
    return {**result.metrics, "run_id": active.info.run_id, "model": result.model}


def run(cfg: Config) -> dict:
    """Train the configured model; returns its metrics (``test_accuracy``, ``seconds_to_val_99``, ...) and run id."""
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    print(f"train: {cfg.model.name}, seed {cfg.seed}, {cfg.train.epochs} epoch(s) of {len(splits.y_train):,} images",
          flush=True)
    out = train_in_run(cfg, splits)
    out.pop("model")
    to99 = out["seconds_to_val_99"]
    print(
        f"train: test_accuracy={out['test_accuracy']:.4f} val_accuracy={out['val_accuracy']:.4f} "
        f"epochs={out['epochs_run']} (best {out['best_epoch']}) train_seconds={out['train_seconds']:.0f} "
        f"seconds_to_val_99={'never' if to99 is None else f'{to99:.0f}'}\n"
        f"run id: {out['run_id']}\nMLflow UI: {tracking.ui_command(cfg)}"
    )
    return out
