"""The errors mnist99 raises for bad input: the CLI prints them as one line and exits non-zero."""


class Mnist99Error(Exception):
    """A problem the user can fix (bad config, data, image or model); shown without a traceback."""


class ConfigError(Mnist99Error):
    """A config file, key or value is wrong."""


class DataError(Mnist99Error):
    """MNIST could not be found, or a file is corrupt."""


class InputError(Mnist99Error):
    """An image or array given for prediction is not usable."""


class ModelLoadError(Mnist99Error):
    """A model file or URI cannot be loaded."""


class ExportError(Mnist99Error):
    """An export format's file does not answer like the Keras model it was converted from."""


class TrackingError(Mnist99Error):
    """The MLflow store cannot be opened or written (bad path, not a database, locked too long)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): a one-line error
    names the cause without the rest of a library's multi-line explanation or traceback."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
