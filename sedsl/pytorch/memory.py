"""Will a network's parameters fit? Checked before a module is built, so that the allocator does
not fail, or the machine swap, halfway through."""

from __future__ import annotations

import os

from sedsl.errors import DeviceError


def check_parameter_memory(network: str, params: int, device: str | None, check: bool) -> None:
    """Refuse to build a module whose parameters and buffers (`params` elements) would not fit
    in the device's free memory (so that the allocator does not fail, or the machine swap,
    halfway through)."""
    import torch

    if params >= 2**62:  # past what a torch tensor can index, even on the meta device
        raise DeviceError(f"{network} has {params:.3g} parameters: more than torch can hold")
    kind = torch.device(device).type if device is not None else "cpu"
    if not check or kind == "meta":
        return
    need = params * torch.get_default_dtype().itemsize
    free = free_memory(kind, device)
    if free is not None and need > free:
        raise DeviceError(
            f"{network} needs about {_bytes(need)} for its {params:,} parameters and buffers, "
            f"more than the "
            f"{_bytes(free)} free on {kind}",
            "build it without memory with to_torch(device=\"meta\"), or try anyway with "
            "check_memory=False")


def free_memory(kind: str, device: str | None) -> int | None:
    """Free bytes on the device: MemAvailable for the CPU, the driver's figure for CUDA."""
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
