"""What machine a figure came from: CPU, cores, torch and its threads, Python."""

from __future__ import annotations

import os
import platform


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
