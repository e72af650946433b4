"""Available memory, for the defaults that size retained graphs and Krylov bases."""

from __future__ import annotations

import torch

FALLBACK_BYTES = 8 * 2**30  # when the platform does not say (no /proc/meminfo)


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes available now on ``device``: free GPU memory for CUDA, else the OS's MemAvailable."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_BYTES
