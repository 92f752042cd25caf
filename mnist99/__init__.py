"""mnist99: MNIST past 99% as a staged, tracked, tunable, reproducible Keras 3 pipeline."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides our output

__version__ = "0.1.0"


def __getattr__(name: str):
    """``mnist99.load_ensemble`` on first use: importing mnist99 must not load TensorFlow."""
    if name == "load_ensemble":
        from mnist99.delivery.loading import load_ensemble

        return load_ensemble
    raise AttributeError(f"module 'mnist99' has no attribute {name!r}")
