"""The input pipeline's options: what every dataset the training reads carries."""
import numpy as np
import pytest

from mnist99.data.batches import make_dataset, make_index_dataset


@pytest.mark.parametrize("training", [False, True])
def test_every_input_pipeline_runs_without_the_autotuning_thread(training):
    x = np.zeros((40, 28, 28), np.uint8)
    y = np.arange(40) % 10
    for ds in (make_dataset(x, y, 16, training=training), make_index_dataset(0, y, 16, training=training)):
        assert ds.options().autotune.enabled is False
        assert sum(len(labels) for _, labels in ds) == (32 if training else 40)
