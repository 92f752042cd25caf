"""Which CPU a run ran on: one line from /proc/cpuinfo, tagged on every run and printed by ``mnist99 run``."""
from pathlib import Path

from mnist99.training import devices
from mnist99.training.devices import cpu_description, cpu_model, describe_cpu
from mnist99.training.workers import cpu_cores


def cpuinfo(name: str | None, family: str | None, model: str | None, flags: str | None, processors: int = 2) -> str:
    """/proc/cpuinfo's text for ``processors`` alike processors (fields left out where None)."""
    block = ["vendor_id\t: AuthenticAMD"]
    block += [f"cpu family\t: {family}"] if family is not None else []
    block += [f"model\t\t: {model}"] if model is not None else []
    block += [f"model name\t: {name}"] if name is not None else []
    block += ["cpu MHz\t\t: 2400.000", "cache size\t: 1024 KB"]
    block += [f"flags\t\t: {flags}"] if flags is not None else []
    return "\n\n".join("\n".join([f"processor\t: {i}", *block]) for i in range(processors)) + "\n\n"


def test_a_cpu_is_named_by_model_family_cores_and_vector_units():
    """Two machines that both say "AMD EPYC" with AVX-512 differ in family; flags name the units in a fixed order."""
    flags = "fpu vme sse2 avx avx512_bf16 avx2 fma avx512f avx512dq amx_bf16"
    assert describe_cpu(cpuinfo("AMD EPYC", "25", "17", flags), 2) == \
        "AMD EPYC (family 25, model 17); 2 cores; avx2 avx512f avx512_bf16"
    assert describe_cpu(cpuinfo("AMD EPYC", "26", "2", flags), 2) == \
        "AMD EPYC (family 26, model 2); 2 cores; avx2 avx512f avx512_bf16"
    intel = cpuinfo("Intel(R) Xeon(R) Processor", "6", "143", "sse2 amx_tile avx2 avx512f avx512_bf16", processors=4)
    assert describe_cpu(intel, 4) == "Intel(R) Xeon(R) Processor (family 6, model 143); 4 cores; avx2 avx512f " \
                                     "avx512_bf16 amx_tile"
    old = cpuinfo("Old x86", "6", "23", "fpu sse2 sse4_1 avx")
    assert describe_cpu(old, 1) == "Old x86 (family 6, model 23); 1 core; no AVX2"
    assert cpu_model(intel) == "Intel(R) Xeon(R) Processor"  # the name alone, as the benchmarks print it


def test_a_cpu_without_x86_fields_falls_back_to_the_platform(monkeypatch):
    """An ARM /proc/cpuinfo (no model name, no flags) or none at all (macOS, Windows): the platform's name, no units."""
    monkeypatch.setattr(devices.platform, "processor", lambda: "")
    monkeypatch.setattr(devices.platform, "machine", lambda: "aarch64")
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n\n"
    assert describe_cpu(arm, 8) == "aarch64; 8 cores"
    monkeypatch.setattr(devices.platform, "processor", lambda: "arm")
    assert describe_cpu("", 10) == "arm; 10 cores"
    assert cpu_model("") == "arm"


def test_this_machine_is_described_from_its_own_cpuinfo():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_description() == describe_cpu(text, cpu_cores())
    assert f"; {cpu_cores()} core" in cpu_description()
