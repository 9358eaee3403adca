"""`SqueezeExcite`, the module generated fused models use: the SE block [+ shortcut add
[+ activation]] as one op (sedsl.pytorch.kernels.op), with the BatchNorm before it folded in
when it is given one (sedsl.pytorch.kernels.bn_op); plain torch ops where the kernels do not run.
"""

from __future__ import annotations

from torch import Tensor, nn

from sedsl.pytorch.kernels import bn_op, reference
from sedsl.pytorch.kernels.op import call_op, check_names, hooked, use_triton


class SqueezeExcite(nn.Module):
    """SE block [+ shortcut add [+ activation]] as one op; fc1/fc2 state-dict keys as timm's.
    `forward(x, identity, bn)` with the BatchNorm module before the block folds it in
    (sedsl.pytorch.kernels.bn_op): x is then the BN's input, and the BN keeps its own
    parameters, buffers and state-dict keys where the model has it."""

    def __init__(self, channels: int, rd_channels: int, bias: bool = True, squeeze: str = "avg",
                 excite: str = "relu", gate: str = "sigmoid", act: str = "none") -> None:
        super().__init__()
        check_names(squeeze, excite, gate, act)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.squeeze, self.excite, self.gate, self.act = squeeze, excite, gate, act
        # Sees the gate s (N, C, 1, 1) that produced the output: a forward hook here records
        # the excitation (sedsl excite). Parameterless, so no state-dict keys.
        self.probe = nn.Identity()

    def forward(self, u: Tensor, identity: Tensor | None = None,
                bn: nn.Module | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity, bn)
        if bn is not None and not bn_op.foldable(bn, self.squeeze):
            u, bn = bn(u), None  # the BN as a module, then the op
        if bn is not None:
            out, _, s, _ = bn_op.call(u, bn, self.fc1.weight, self.fc1.bias,
                                            self.fc2.weight, self.fc2.bias, identity,
                                            self.squeeze, self.excite, self.gate, self.act)
        else:
            out, _, s, _ = call_op(u, self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                 self.fc2.bias, identity, self.squeeze, self.excite, self.gate,
                                 self.act, True)
        if hooked(self.probe):
            self.probe(s[:, :, None, None])  # the op's own s, as a view
        return out

    def plain(self, u: Tensor, identity: Tensor | None = None,
              bn: nn.Module | None = None) -> Tensor:
        """The block as ordinary torch ops (after the BN module, if given): where the kernels
        do not run (the CPU), eager mode, autograd and torch.compile's inductor all do best
        with these (the op's CPU implementation would hide them from inductor's fusion), and
        the results are those of the unfused lowering, bit for bit."""
        if bn is not None:
            u = bn(u)
        z = u.mean((2, 3), keepdim=True) if self.squeeze == "avg" else u.amax((2, 3), keepdim=True)
        h = reference.activate(self.excite, self.fc1(z))  # (N, R, 1, 1)
        x = u * self.probe(reference.activate(self.gate, self.fc2(h)))  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.act, x)

    def extra_repr(self) -> str:
        return (f"squeeze={self.squeeze!r}, excite={self.excite!r}, gate={self.gate!r}, "
                f"act={self.act!r}")

