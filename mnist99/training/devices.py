"""What the active Keras backend computes on: the one place that asks whether there is a GPU, and which CPU this is."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import keras

from mnist99.training.workers import cpu_cores

# The vector units TensorFlow's CPU kernels pick for these nets (float32 AVX2 or AVX-512, bfloat16, Intel's AMX tiles):
# what tells the CPUs of one name apart in a run's speed.
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def gpu_names() -> list[str]:
    """The GPUs the active backend sees (TensorFlow or JAX), by device name; empty on a CPU."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices()] if jax.default_backend() == "gpu" else []
    return []


def has_gpu() -> bool:
    """Whether the active Keras backend computes on a GPU."""
    return bool(gpu_names())


def device_name() -> str:
    """``GPU:<name of the first GPU>`` or ``CPU``: the ``mnist99.device`` tag of every run."""
    names = gpu_names()
    return f"GPU:{names[0]}" if names else "CPU"


@functools.cache
def cpuinfo_text() -> str:
    """``/proc/cpuinfo``'s text, read once a process; ``""`` where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``cpuinfo`` (default: this machine's :func:`cpuinfo_text`), else what
    :mod:`platform` knows: the name the benchmarks print beside their figures."""
    return first_processor(cpuinfo_text() if cpuinfo is None else cpuinfo).get("model name") \
        or platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_description() -> str:
    """This machine's CPU in one line, the ``mnist99.cpu`` tag of every run and a line of ``mnist99 run``'s
    summary: e.g. ``AMD EPYC (family 25, model 17); 2 cores; avx2 avx512f avx512_bf16``.

    A run's seconds mean little without it, and the model name alone is not enough: two 2-core machines that
    both call themselves "AMD EPYC", both with AVX-512 and numpy matmul rates within 10%, trained the default's
    members 1.4x apart (epochs three at a time of 44 s in family 26, 61 s in family 25), and only the CPU family
    told them apart (benchmarks/results/cpu-2core/2026-12-08-fresh-clone-avx512-366a1aa.md and
    2026-12-08-fresh-clone-avx512-family-25-0aa66f5.md)."""
    return describe_cpu(cpuinfo_text(), cpu_cores())


def first_processor(cpuinfo: str) -> dict[str, str]:
    """The fields of ``cpuinfo``'s first processor block (the others repeat it on the machines this runs on)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip() and fields:
            break
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def describe_cpu(cpuinfo: str, cores: int) -> str:
    """:func:`cpu_description` from the text of ``/proc/cpuinfo`` (``""`` where there is none: then the name
    :mod:`platform` gives, and no extensions) and the cores this process may use."""
    fields = first_processor(cpuinfo)
    name = cpu_model(cpuinfo)
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    parts = [name, f"{cores} core{'s' if cores != 1 else ''}"]
    if "flags" in fields:  # x86 Linux: which of the vector units it has
        flags = set(fields["flags"].split())
        parts.append(" ".join(e for e in VECTOR_EXTENSIONS if e in flags) or "no AVX2")
    return "; ".join(parts)
