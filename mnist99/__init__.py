"""mnist99: MNIST past 99% as a staged, tracked, tunable, reproducible Keras 3 pipeline."""
import importlib
import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides our output

__version__ = "0.1.0"


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) that imports ``<package>.<homes[name]>`` when ``name`` is first used.

    Packages whose names pull in heavy libraries (TensorFlow, Keras, MLflow, KerasTuner) export them this
    way, so that importing the package, validating a config or ``mnist99 --help`` loads none of those.
    """
    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__


# ``mnist99.load_ensemble`` on first use: importing mnist99 must not load TensorFlow.
__getattr__ = lazy_attributes(__name__, {"load_ensemble": "delivery.loading"})
