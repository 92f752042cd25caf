"""An ensemble exported by mnist99 0.1.0 (tests/data/, made before the package layout changed) still loads
with ``mnist99.load_ensemble`` and gives the probabilities it gave when it was written."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import mnist99

DATA = Path(__file__).resolve().parent / "data"


def test_an_ensemble_exported_by_0_1_0_loads_and_predicts_the_same():
    model = mnist99.load_ensemble(DATA / "ensemble-v0.1.0.keras")
    expected = np.load(DATA / "ensemble-v0.1.0-expected.npz")
    probs = model.predict(expected["images"], verbose=0)
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs, expected["probs"], rtol=0, atol=1e-6)
