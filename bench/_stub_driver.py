"""Triton's host path without a GPU, shared by bench/se_host_overhead.py,
tests/test_kernels_launch.py and tests/test_kernels_aot.py: a stub driver reports a CUDA target
(`activate`, all three); with `install`, the first launch of each specialisation plants a
compiled kernel in Triton's cache (jit_cache_hook) whose launcher calls
`on_launch(name, *launcher_args)` instead of the driver's cuLaunchKernel. Later launches run
Triton's whole host path (argument binding, specialisation, cache lookup, the autotuner's
dispatch), or sedsl's direct launcher, and then that callback. Process-wide: run it in a child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def activate(arch: int = 90, device: str = "cpu") -> None:
    """Make Triton believe a CUDA device of compute capability `arch` is current, its tensors on
    torch's `device` (CPU tensors get real pointers; `meta` ones none, for compiling only); the
    autotuner "times" each config by running it once, all equally fast."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.runtime.driver import driver

    class StubDriver(DriverBase):  # type: ignore[misc]
        @classmethod
        def is_active(cls) -> bool:
            return False

        def map_python_to_cpp_type(self, ty: str) -> str:
            return ty

        def get_current_target(self) -> Any:
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self) -> Any:
            return torch.device(device)

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_benchmarker(self) -> Any:
            return lambda kernel_call, quantiles: (kernel_call(), [1.0, 1.0, 1.0])[1]

    driver.set_active(StubDriver())


def install(on_launch: Callable[..., None]) -> None:
    """`activate()` (sm_90, CPU tensors), and compiled kernels whose launcher reports to
    `on_launch(name, *launcher_args)` instead of launching."""
    import triton

    class Planted:
        """A compiled kernel whose launcher only reports the launch."""

        function = packed_metadata = None

        def __init__(self, name: str) -> None:
            self.name = name

        def launch_metadata(self, *args: Any) -> None:
            return None

        def run(self, *args: Any) -> None:
            on_launch(self.name, *args)

    def plant(*, fn: Any, key: Any, **_: Any) -> bool:
        fn.jit_function.device_caches[0][0][key] = Planted(fn.name)
        return True  # this first call launches nothing; later calls find the planted kernel

    activate()
    triton.knobs.runtime.jit_cache_hook = plant
