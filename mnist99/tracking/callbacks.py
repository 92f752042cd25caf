"""The Keras callback that logs each epoch to the active MLflow run."""
from __future__ import annotations

import keras
import mlflow

from mnist99.training.callbacks import EpochTimer


class MlflowEpochLogger(EpochTimer):
    """Logs ``loss, accuracy, val_loss, val_accuracy, lr`` and ``epoch_seconds`` with step = epoch.

    ``logged_until``: epochs up to this step were logged before an interruption; a resumed run
    that repeats one of them (killed after logging, before its backup) does not log it twice.
    """

    def __init__(self, logged_until: int = 0) -> None:
        super().__init__()
        self.logged_until = logged_until

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        metrics["lr"] = current_lr(self.model.optimizer)
        metrics["epoch_seconds"] = self.epoch_seconds()
        if epoch + 1 > self.logged_until:
            mlflow.log_metrics(metrics, step=epoch + 1)


def current_lr(optimizer) -> float:
    """The learning rate the optimiser is using now (schedules evaluated at the current step)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
