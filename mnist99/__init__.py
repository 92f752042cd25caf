"""mnist99: MNIST past 99% as a staged, tracked, tunable, reproducible Keras 3 pipeline."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides our output

__version__ = "0.1.0"
