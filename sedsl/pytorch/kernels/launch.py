"""Launching Triton kernels with little host time.

`kernel[grid](*args)` makes Triton bind and specialise every argument (a C call per argument:
the SE kernels take 20-35), hash the specialisation and look the compiled kernel up, and an
autotuned kernel adds its own dispatch: ~50 µs of host time per launch on the development VM,
where an eager torch op costs ~4 µs. The first GPU run found the fused SE op host-bound at every
size (0.5-0.9 ms forward, eight launches and the op's dispatch), so:

A `Launch` fixes everything about one launch except its tensors: the kernel, the grid, the
integer arguments and the constexprs (the launchers build one per shape and cache it). Its first
call goes through Triton, which compiles (and autotunes) as usual and returns the compiled
kernel; later calls whose tensors specialise the same way (dtypes, 16-byte alignment of each
pointer, device) call that kernel's launcher directly, as the launchers torch.compile generates
do (`bin.run(grid, stream, function, metadata, launch_metadata, hooks, *args)`, the calling
convention of Triton 3.0 and later). Under the interpreter, or with Triton's launch hooks set
(profilers such as proton), every call goes through Triton.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import triton
from torch import Tensor

from sedsl.pytorch.kernels.interpret import interpreting

DIRECT = not interpreting()  # the direct path (never under the interpreter; tests switch it)
# (device index, per tensor (dtype, pointer % 16 == 0)) -> (launcher, function, metadata)
_Key = tuple[int, tuple[tuple[Any, bool], ...]]
_Compiled = tuple[Callable[..., Any], Any, Any]


class Launch:
    """One kernel launch with everything but its tensors fixed; `launch(*tensors)` runs it.
    The kernel's parameters must be its tensors, then `ints` (scalars: integers, and floats
    such as a BN's momentum), then `consts`, in that order."""

    __slots__ = ("_compiled", "_tail", "consts", "grid", "ints", "kernel", "options")

    def __init__(self, kernel: Any, grid: int, ints: tuple[int | float, ...],
                 consts: dict[str, Any],
                 options: dict[str, int] | None = None) -> None:
        names = list(kernel.arg_names)
        assert set(consts) <= set(names), (set(consts) - set(names), kernel)
        consts = {k: consts[k] for k in names if k in consts}  # in the kernel's order
        self.kernel, self.grid, self.ints, self.consts = kernel, grid, ints, consts
        self.options = options or {}
        self._tail = (*ints, *consts.values())  # the launcher's arguments after the tensors
        self._compiled: dict[_Key, _Compiled] = {}

    def __call__(self, *tensors: Tensor) -> None:
        if not DIRECT:
            self.kernel[(self.grid,)](*tensors, *self.ints, **self.consts, **self.options)
            return
        device = tensors[0].get_device()
        key = (device, tuple((t.dtype, not t.data_ptr() % 16) for t in tensors))
        hit = self._compiled.get(key)
        runtime = triton.knobs.runtime
        if hit is not None and _quiet(runtime.launch_enter_hook) \
                and _quiet(runtime.launch_exit_hook):
            run, function, metadata = hit
            stream = triton.runtime.driver.active.get_current_stream(device)
            run(self.grid, 1, 1, stream, function, metadata, None, None, None, *tensors,
                *self._tail)
            return
        compiled = self.kernel[(self.grid,)](*tensors, *self.ints, **self.consts,
                                             **self.options)
        if self._matches(len(tensors)) and hasattr(compiled, "packed_metadata"):
            self._compiled[key] = (compiled.run, compiled.function, compiled.packed_metadata)

    def _matches(self, n_tensors: int) -> bool:
        """Whether the kernel's parameters are the tensors, the ints, then the constexprs, so
        that the launcher's positional arguments are exactly (*tensors, *self._tail)."""
        names = list(self.kernel.arg_names)
        return (len(names) == n_tensors + len(self._tail)
                and names[n_tensors + len(self.ints):] == list(self.consts))


def _quiet(hook: Any) -> bool:
    """Whether a launch hook of Triton's knobs does nothing: None (Triton 3.0-3.6) or an empty
    HookChain (later)."""
    return hook is None or getattr(hook, "calls", None) == []
