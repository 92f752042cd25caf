"""C++ libraries' console lines that no Python log level reaches (TensorFlow's start-up, LiteRT's INFO)."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def muted_stderr(mute: bool = True) -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block (``mute`` False: unchanged), where C++ code writes directly.

    Exceptions raised inside still carry their messages; they are printed, if at all, once stderr is back.
    """
    if not mute:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def library_info_muted() -> bool:
    """Whether the libraries' INFO lines are off: TensorFlow's ``TF_CPP_MIN_LOG_LEVEL`` above 0 (mnist99's
    default; ``--verbose`` sets 0), applied to libraries such as LiteRT that do not read it."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("", "0")
