"""What machine a figure came from (CPU, cores, torch and its threads, Python), and what it computes
natively: the precision `auto` resolves to.
"""

from __future__ import annotations

import os
import platform

from evoprune.errors import EvopruneError


def machine() -> str:
    """Describe this machine in one line (benchmarks and reports print it)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}")


PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_PRECISION = "auto"  # bf16 where the device computes it natively, else fp32


def bf16_native(device_type: str) -> bool:
    """Whether `device_type` (cpu|cuda) computes bf16 natively: AVX-512 BF16 or AMX on a CPU."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def resolve_precision(spec: str, device_type: str) -> str:
    """Turn auto|fp32|bf16 into fp32 or bf16 for `device_type`; bf16 must be native there."""
    if spec not in PRECISIONS:
        raise EvopruneError(f"unknown precision {spec!r}: use {', '.join(PRECISIONS)}")
    if spec == "fp32":
        return "fp32"
    native = bf16_native(device_type)
    if spec == "bf16" and not native:
        what = "CPU has neither AVX-512 BF16 nor AMX" if device_type == "cpu" else \
            "device does not compute bf16"
        raise EvopruneError(f"`precision` bf16: this {what}; use `precision` fp32 or auto")
    return "bf16" if native else "fp32"
