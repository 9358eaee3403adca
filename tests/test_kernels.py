"""sedsl.pytorch.kernels off the GPU: the reference, the op's CPU path, the module, compile and
export.

The expected values come from `torch_se`, a float64 SE block composed here from torch.nn modules
(adaptive pooling, 1x1 convolutions, activation modules), independent of
sedsl.pytorch.kernels.reference.
kernels_interpret_cases.py (run by test_kernels_interpret.py) reuses it for the Triton kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sedsl.pytorch.kernels import SqueezeExcite, se_block
from sedsl.pytorch.kernels import op as se_op
from sedsl.pytorch.kernels.reference import se_block_reference

ROOT = Path(__file__).resolve().parents[1]

MODULES: dict[str, type[nn.Module]] = {
    "none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU,
    "hardswish": nn.Hardswish, "sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
}


def torch_se(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
             identity: Tensor | None, squeeze: str, excite: str, gate: str, act: str) -> Tensor:
    """The SE block in float64 from torch.nn pieces; w1 (R, C), w2 (C, R)."""
    y, _ = pre_activation(u, w1, b1, w2, b2, identity, squeeze, excite, gate)
    return MODULES[act]()(y)


def pre_activation(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                   identity: Tensor | None, squeeze: str, excite: str,
                   gate: str) -> tuple[Tensor, Tensor]:
    """(y = s * U + identity, its magnitude |s * U| + |identity|) in float64."""
    r, c = w1.shape
    x = u.double()
    pool = nn.AdaptiveAvgPool2d(1) if squeeze == "avg" else nn.AdaptiveMaxPool2d(1)
    b1d = None if b1 is None else b1.double()
    b2d = None if b2 is None else b2.double()
    h = MODULES[excite]()(F.conv2d(pool(x), w1.double().view(r, c, 1, 1), b1d))  # (N, R, 1, 1)
    s = MODULES[gate]()(F.conv2d(h, w2.double().view(c, r, 1, 1), b2d))  # (N, C, 1, 1)
    y = x * s
    size = y.abs()
    if identity is not None:
        y = y + identity.double()
        size = size + identity.double().abs()
    return y, size


# Where each post-activation's derivative jumps.
KINKS = {"relu": (0.0,), "relu6": (0.0, 6.0), "hardsigmoid": (-3.0, 3.0),
         "hardswish": (-3.0, 3.0)}


def at_kinks(inputs: dict[str, Tensor | None], case: Case, dtype: torch.dtype) -> Tensor:
    """The elements whose pre-activation y lies within rounding of a kink of the post-activation,
    where the derivative (0 or 1 for relu) is decided by rounding, not by the block: within
    2^-18 of |s * U| + |identity| (the kernels compute y in fp32 from an fp32 s, the reference
    in float64), or below half the dtype's smallest subnormal (where the output, whose sign
    gives relu's mask as in torch, rounds to 0). The first GPU run failed test_op_cuda[fp16]
    on one such element of 802,816 (y = 1.9e-9 in float64, 0 in fp32: derivative 1 against
    0). There the gradients of U and the identity may take either value; the weights' are
    sums that one such element barely moves."""
    args = {k: None if v is None else v.detach() for k, v in inputs.items()}
    with torch.no_grad():
        y, size = pre_activation(*(args[k] for k in NAMES), case.squeeze, case.excite,
                                 case.gate)
    info = torch.finfo(dtype)
    slack = torch.clamp(size * 2.0**-18, min=info.tiny * info.eps)
    near = torch.zeros_like(y, dtype=torch.bool)
    for k in KINKS.get(case.act, ()):
        near |= (y - k).abs() <= slack
    return near


@dataclass(frozen=True)
class Case:
    """One SE-block configuration: squeeze, excite, gate, act and whether there is a shortcut."""

    squeeze: str
    excite: str
    gate: str
    act: str
    identity: bool

    def __str__(self) -> str:
        tail = "-id" if self.identity else ""
        return f"{self.squeeze}-{self.excite}-{self.gate}-{self.act}{tail}"


# Every excite, gate and act choice appears at least once.
CASES = [
    Case("avg", "relu", "sigmoid", "relu", True),  # SE-ResNet
    Case("avg", "relu", "sigmoid", "none", False),  # plain SE module
    Case("max", "silu", "hardsigmoid", "hardswish", True),
    Case("avg", "relu6", "tanh", "silu", False),
    Case("max", "hardswish", "relu", "relu6", True),
    Case("avg", "sigmoid", "sigmoid", "sigmoid", True),
    Case("max", "hardsigmoid", "hardsigmoid", "hardsigmoid", False),
    Case("avg", "tanh", "tanh", "tanh", True),
    Case("avg", "relu", "sigmoid", "none", True),  # dIdentity is dOut
]
SE_RESNET = CASES[0]
# Relative to the largest expected value. bf16 allows a few ulps: one rounding of the output,
# one of dIdentity (which dU is computed from), and Triton's interpreter truncates on fp32 -> bf16.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
NAMES = ("u", "w1", "b1", "w2", "b2", "identity")


def make_inputs(shape: tuple[int, int, int, int], rd: int, case: Case,
                dtype: torch.dtype = torch.float32, channels_last: bool = False,
                weight_dtype: torch.dtype | None = None, bias: bool = True,
                seed: int = 0, device: str = "cpu") -> dict[str, Tensor | None]:
    """Leaf tensors (requiring grad) of an SE block; for "max" every (n, c) plane of U holds
    distinct values (a shuffled lattice while H*W <= 256), so the argmax is unique."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    if case.squeeze == "max" and h * w <= 256:
        perm = torch.rand((n, c, h * w), generator=gen).argsort(-1)
        u = ((perm - h * w // 2) / 32.0).view(shape)  # multiples of 1/32: exact in fp16/bf16
    else:
        assert case.squeeze == "avg" or dtype in (torch.float32, torch.float64)
        u = torch.randn(shape, generator=gen)
    wd = weight_dtype or dtype
    t: dict[str, Tensor | None] = {
        "u": u.to(dtype),
        "w1": (torch.randn((rd, c), generator=gen) / c**0.5).to(wd),
        "b1": torch.randn(rd, generator=gen).to(wd) if bias else None,
        "w2": (torch.randn((c, rd), generator=gen) / rd**0.5).to(wd),
        "b2": torch.randn(c, generator=gen).to(wd) if bias else None,
        "identity": torch.randn(shape, generator=gen).to(dtype) if case.identity else None,
    }
    if channels_last:
        for k in ("u", "identity"):
            if t[k] is not None:
                t[k] = t[k].to(memory_format=torch.channels_last)
    return {k: None if v is None else v.to(device).requires_grad_() for k, v in t.items()}


def check_block(inputs: dict[str, Tensor | None], case: Case,
                grad: Tensor | None = None) -> None:
    """se_block's output and the gradients of all six inputs against torch_se's."""
    kw = {"squeeze": case.squeeze, "excite": case.excite, "gate": case.gate, "act": case.act}
    args = [inputs[k] for k in NAMES]
    out = se_block(*args[:5], args[5], **kw)
    u = inputs["u"]
    assert u is not None
    assert out.dtype == u.dtype and out.stride() == torch.empty_like(u).stride()
    leaves = {k: v.detach().double().requires_grad_() for k, v in inputs.items() if v is not None}
    want = torch_se(*(leaves.get(k) for k in NAMES), **kw)
    assert_close(out, want, u.dtype)
    if grad is None:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    g = grad.to(out.device, out.dtype)
    got = torch.autograd.grad(out, [a for a in args if a is not None], g)
    exp = torch.autograd.grad(want, list(leaves.values()), g.double())
    kinks = at_kinks(inputs, case, u.dtype).to(out.device)
    assert kinks.sum() <= max(4, kinks.numel() // 100000), "too many elements at a kink"
    for name, a, b in zip(leaves, got, exp, strict=True):
        assert a.shape == b.shape, name
        if name in ("u", "identity"):  # elementwise: either derivative at a kink
            a, b = a[~kinks], b[~kinks]
        assert_close(a, b, a.dtype, name)


def assert_close(got: Tensor, want: Tensor, dtype: torch.dtype, what: str = "out") -> None:
    """|got - want| <= tol * (|want| + max |want|), tol by dtype."""
    tol = TOL[dtype]
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * max(scale, 1e-3),
                               msg=lambda m: f"{what}: {m}")


# --- reference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_gradcheck(case: Case) -> None:
    t = make_inputs((2, 6, 3, 4), 3, case, torch.float64)
    kw = {"squeeze": case.squeeze, "excite": case.excite, "gate": case.gate, "act": case.act}
    args = [t[k] for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: se_block_reference(*a, **kw), args)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_matches_torch_nn(case: Case) -> None:
    t = make_inputs((2, 8, 5, 5), 4, case, torch.float64)
    kw = {"squeeze": case.squeeze, "excite": case.excite, "gate": case.gate, "act": case.act}
    args = [t[k] for k in NAMES]
    got = se_block_reference(*args, **kw)
    want = torch_se(*args, **kw)
    assert_close(got, want, torch.float64)
    leaves = [a for a in args if a is not None]
    for a, b in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(want.sum(), leaves),
                    strict=True):
        assert_close(a, b, torch.float64)


# --- the op on CPU (its torch implementation and hand-written backward) -------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_gradcheck(case: Case) -> None:
    """The op's own backward (sedsl::se_block_backward), numerically, in float64."""
    t = make_inputs((2, 5, 3, 3), 3, case, torch.float64)
    kw = {"squeeze": case.squeeze, "excite": case.excite, "gate": case.gate, "act": case.act}
    args = [t[k] for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: se_block(*a, **kw), args)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_cpu(case: Case, channels_last: bool) -> None:
    check_block(make_inputs((2, 16, 7, 7), 4, case, channels_last=channels_last), case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=str)
def test_op_cpu_half(case: Case, dtype: torch.dtype) -> None:
    check_block(make_inputs((2, 16, 7, 7), 4, case, dtype, channels_last=True), case)
    check_block(make_inputs((2, 16, 7, 7), 4, case, dtype, weight_dtype=torch.float32), case)


@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 1823, 3, 3), (3, 5, 1, 1), (1, 8, 56, 56)],
                         ids=lambda s: "x".join(map(str, s)))
def test_op_cpu_awkward_shapes(shape: tuple[int, int, int, int]) -> None:
    rd = max(1, shape[1] // 16)
    for case in (CASES[0], CASES[2]):
        check_block(make_inputs(shape, rd, case, bias=case.squeeze == "avg"), case)


def test_op_cpu_fp16_at_a_relu_kink() -> None:
    """The case test_op_cuda[fp16] failed on in the first GPU run, on the op's CPU path (which
    computes y in fp32 as the kernels do): one element's y is 1.9e-9 in float64 and exactly 0
    in fp32, so ReLU's derivative there is 1 in the float64 reference and 0 in the op. The
    comparison takes either value at such elements (`at_kinks`), and there is one here."""
    inputs = make_inputs((1, 256, 56, 56), 16, SE_RESNET, torch.float16)
    kinks = at_kinks(inputs, SE_RESNET, torch.float16)
    assert kinks[0, 139, 2, 22] and kinks.sum() <= 4
    check_block(inputs, SE_RESNET)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_op_cuda(channels_last: bool, dtype: torch.dtype) -> None:
    """The compiled Triton kernels (only where there is a GPU)."""
    for case in CASES:
        check_block(make_inputs((4, 64, 14, 14), 4, case, dtype, channels_last, device="cuda"),
                    case)
    for shape in [(1, 3, 7, 7), (2, 1823, 3, 3), (3, 5, 1, 1), (1, 256, 56, 56)]:
        case = CASES[2] if dtype == torch.float32 or shape[2] * shape[3] <= 256 else CASES[0]
        inputs = make_inputs(shape, max(1, shape[1] // 16), case, dtype, channels_last,
                             device="cuda")
        check_block(inputs, case)


def test_op_opcheck() -> None:
    """torch.library.opcheck: schema, fake tensors, autograd registration, AOT dispatch."""
    for case in (CASES[0], CASES[2]):
        t = make_inputs((2, 8, 4, 4), 2, case, channels_last=case.squeeze == "max")
        args = (*(t[k] for k in NAMES), case.squeeze, case.excite, case.gate, case.act)
        torch.library.opcheck(torch.ops.sedsl.se_block.default, args)


def test_op_rejects_bad_arguments() -> None:
    t = make_inputs((2, 8, 4, 4), 2, SE_RESNET)
    u, w1, b1, w2, b2, i = (t[k] for k in NAMES)
    with pytest.raises(ValueError, match="excite"):
        se_block(u, w1, b1, w2, b2, excite="gelu")
    with pytest.raises(ValueError, match="w2"):
        se_block(u, w1, b1, w1, b2)
    with pytest.raises(ValueError, match="identity"):
        se_block(u, w1, b1, w2, b2, i[:1])


def test_dispatch_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    u = torch.randn(1, 2, 3, 3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not se_op.use_triton(u)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert se_op.use_triton(u)
    assert not se_op.use_triton(u.double())


def test_import_does_not_import_triton() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = ("import sys, torch, sedsl.pytorch.kernels; "
            "assert 'triton' not in sys.modules, 'triton imported'; "
            "assert torch.ops.sedsl.se_block is not None")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr


# --- the module ---------------------------------------------------------------------------------


def _timm_modules() -> list[tuple[str, nn.Module, SqueezeExcite]]:
    timm_layers = pytest.importorskip("timm.layers")
    senet = pytest.importorskip("timm.models.senet")
    return [
        ("layers.SEModule", timm_layers.SEModule(64, rd_channels=4), SqueezeExcite(64, 4)),
        ("senet.SEModule", senet.SEModule(64, 16), SqueezeExcite(64, 4)),
        ("layers.SEModule silu/hard_sigmoid",
         timm_layers.SEModule(64, rd_channels=8, act_layer=nn.SiLU, gate_layer="hard_sigmoid"),
         SqueezeExcite(64, 8, excite="silu", gate="hardsigmoid")),
    ]


def test_module_matches_timm() -> None:
    x = torch.randn(2, 64, 7, 7)
    for name, theirs, ours in _timm_modules():
        mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert mine == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}, name
        ours.load_state_dict(theirs.state_dict())
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ours(x.to(memory_format=torch.channels_last)), theirs(x),
                                   rtol=1e-5, atol=1e-6, msg=name)


def test_module_shortcut_and_activation() -> None:
    m = SqueezeExcite(16, 4, bias=False, act="relu")
    assert m.fc1.bias is None and m.fc2.bias is None
    u, i = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    want = torch_se(u, m.fc1.weight.flatten(1), None, m.fc2.weight.flatten(1), None, i,
                    "avg", "relu", "sigmoid", "relu")
    assert_close(m(u, i), want, torch.float32)
    with pytest.raises(ValueError, match="gate"):
        SqueezeExcite(16, 4, gate="silu")


class _Bottleneck(nn.Module):
    """conv -> the SE op with shortcut and ReLU: a small model around the op itself (on the
    CPU, SqueezeExcite runs plain torch ops instead, see test_module_off_the_gpu)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.se = SqueezeExcite(8, 2, act="relu")

    def forward(self, x: Tensor) -> Tensor:
        se = self.se
        return se_block(self.conv(x), se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, x,
                        act="relu")


def test_module_off_the_gpu() -> None:
    """Where the kernels do not run, the module is plain torch ops with the op's results."""
    m = SqueezeExcite(16, 4, act="relu", squeeze="max", excite="silu").eval()
    u, i = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    via_op = se_block(u, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, i, squeeze="max",
                      excite="silu", act="relu")
    assert_close(m(u, i), via_op.double(), torch.float32)
    ep = torch.export.export(m, (u, i))
    assert not any("sedsl" in str(n.target) for n in ep.graph.nodes)


def test_torch_compile_fullgraph() -> None:
    """torch.compile traces the op forward and backward. Inductor's on-disk caches are off:
    their keys cover the forward graph, not the op's autograd, so a compiled backward cached
    by another version of sedsl (a shared /tmp) would be reused."""
    torch.manual_seed(0)
    model = _Bottleneck()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    eager = model(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), [x, *model.parameters()])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *model.parameters()])
    torch.testing.assert_close(out, eager)
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torch_export() -> None:
    torch.manual_seed(0)
    model = _Bottleneck().eval()
    x = torch.randn(2, 8, 6, 6)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "sedsl.se_block.default" in targets
    torch.testing.assert_close(ep.module()(x), model(x))


# --- edge cases (the op's CPU path; the Triton kernels get the same in kernels_interpret_cases) ---


def test_max_ties_follow_amax_on_cpu() -> None:
    """Tied maxima: the op's gradients equal the plain module's (torch.amax splits dz evenly)."""
    m = SqueezeExcite(8, 2, squeeze="max", act="relu")
    u = torch.relu(torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0)) - 0.3)
    u[0, 2] = 0.0
    u[1, 5, 1:3, 2:4] = 7.0
    i = torch.randn(2, 8, 5, 5)
    grad = torch.randn(2, 8, 5, 5)
    results = []
    for fused in (True, False):
        x, y = u.clone().requires_grad_(), i.clone().requires_grad_()
        out = se_block(x, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, y, squeeze="max",
                       act="relu") if fused else m.plain(x, y)
        results.append(torch.autograd.grad(out, [x, y, *m.parameters()], grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_max_nan_matches_amax_on_cpu() -> None:
    m = SqueezeExcite(8, 2, squeeze="max")
    u = torch.randn(2, 8, 5, 5)
    u[0, 1, 2, 2] = float("nan")
    x = u.clone().requires_grad_()
    out = se_block(x, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, squeeze="max")
    torch.testing.assert_close(out, m.plain(u), equal_nan=True)
    (gx,) = torch.autograd.grad(out.sum(), [x])
    xp = u.clone().requires_grad_()
    (gp,) = torch.autograd.grad(m.plain(xp).sum(), [xp])
    torch.testing.assert_close(gx, gp, equal_nan=True)


def test_empty_planes() -> None:
    """H*W = 0: max has no value to take (a clear ValueError, not an IndexError); avg follows
    torch's mean of nothing."""
    t = make_inputs((2, 8, 4, 4), 2, SE_RESNET)
    _, w1, b1, w2, b2, _ = (t[k] for k in NAMES)
    u = torch.empty(2, 8, 0, 4)
    with pytest.raises(ValueError, match="H\\*W"):
        se_block(u, w1, b1, w2, b2, squeeze="max")
    out = se_block(u, w1, b1, w2, b2)
    assert out.shape == u.shape


def test_autocast_keeps_s_in_fp32() -> None:
    """s and z come back in fp32 under autocast, as the fake implementation says."""
    t = make_inputs((2, 8, 4, 4), 2, SE_RESNET)
    args = (*(t[k] for k in NAMES), "avg", "relu", "sigmoid", "relu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, z, s, _ = torch.ops.sedsl.se_block(*args)
        fake = se_op._se_block_fake(*(a.detach() if isinstance(a, Tensor) else a for a in args))
    assert z.dtype == s.dtype == fake[2].dtype == torch.float32


def test_kernel_vocabulary() -> None:
    """The Triton kernels implement exactly what the vocabulary says they do (a subset of the
    reference's names: the rest stay plain ops)."""
    pytest.importorskip("triton")
    from sedsl.ir import vocab
    from sedsl.pytorch.kernels import reference, triton_se

    assert triton_se.KERNEL_ACTIVATIONS == vocab.KERNEL_ACTIVATIONS <= set(reference.ACTIVATIONS)
    assert triton_se.KERNEL_SQUEEZES == vocab.KERNEL_SQUEEZES <= set(reference.SQUEEZES)


def test_every_activation_has_torchs_derivative() -> None:
    """reference.ACTIVATION_GRADS (ATen backward ops) has one entry per vocabulary activation
    and equals autograd's derivative, kinks included."""
    from sedsl.pytorch.kernels import reference

    assert set(reference.ACTIVATION_GRADS) == set(reference.ACTIVATIONS)
    x = torch.cat([torch.linspace(-7, 7, 57), torch.tensor([-3.0, 0.0, 3.0, 6.0])]).double()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name, fn in reference.ACTIVATIONS.items():
        leaf = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(fn(leaf), leaf, g)
        torch.testing.assert_close(reference.activation_grad(name, x, g), want, msg=name)


# --- the SE block with its BatchNorm folded in (sedsl::se_bn_block) -------------------------------

BN_CASES = [SE_RESNET, Case("avg", "silu", "hardsigmoid", "hardswish", True),
            Case("avg", "relu", "sigmoid", "none", False),
            Case("avg", "relu6", "tanh", "relu", False)]


def make_bn_block(shape: tuple[int, int, int, int], case: Case, dtype: torch.dtype = torch.float32,
                  channels_last: bool = False, seed: int = 0,
                  param_dtype: torch.dtype = torch.float32, device: str = "cpu"
                  ) -> tuple[Tensor, Tensor | None, nn.BatchNorm2d, SqueezeExcite]:
    """(x, identity, BN, SE module) with every parameter and BN statistic random (a zero or
    one left at its default hides a mismatch); x with a mean far from 0, as conv outputs may."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = (torch.randn(shape, generator=gen) * 2 + 3).to(dtype)
    identity = torch.randn(shape, generator=gen).to(dtype) if case.identity else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        identity = None if identity is None else identity.contiguous(
            memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(c, momentum=0.3)
    se = SqueezeExcite(c, max(1, c // 4), squeeze=case.squeeze, excite=case.excite,
                       gate=case.gate, act=case.act)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen))
        bn.running_mean.copy_(torch.randn(c, generator=gen))
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.num_batches_tracked.fill_(3)
        for p in se.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
    identity = None if identity is None else identity.to(device)
    return x.to(device), identity, bn.to(device, param_dtype), se.to(device, param_dtype)


def check_bn_block(shape: tuple[int, int, int, int], case: Case, dtype: torch.dtype,
                   channels_last: bool, training: bool,
                   param_dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
    """SqueezeExcite(x, identity, bn) against nn.BatchNorm2d then the SE block in float64:
    output, the gradients of x, the identity, the BN's and the SE block's parameters, and the
    BN's running statistics and count after the step."""
    import copy

    x, identity, bn, se = make_bn_block(shape, case, dtype, channels_last,
                                        param_dtype=param_dtype, device=device)
    bn64, se64 = copy.deepcopy(bn).double(), copy.deepcopy(se).double()
    bn.train(training)
    bn64.train(training)
    leaves = [x.requires_grad_(), *([identity.requires_grad_()] if identity is not None else [])]
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    out = se(x, identity, bn)
    want = se64.plain(leaves64[0], leaves64[1] if identity is not None else None, bn64)
    assert out.dtype == x.dtype and out.stride() == torch.empty_like(x).stride()
    assert_close(out, want, dtype)
    for buf in ("running_mean", "running_var", "num_batches_tracked"):
        ours, theirs = getattr(bn, buf), getattr(bn64, buf)
        assert_close(ours, theirs.to(torch.float64), param_dtype if buf != "num_batches_tracked"
                     else torch.float64, buf)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    params, params64 = [*bn.parameters(), *se.parameters()], [*bn64.parameters(),
                                                               *se64.parameters()]
    got = torch.autograd.grad(out, [*leaves, *params], grad)
    exp = torch.autograd.grad(want, [*leaves64, *params64], grad.double())
    with torch.no_grad():  # elements at a kink of act (see at_kinks), with BN(x) as U
        bn_copy = copy.deepcopy(bn64).eval() if not training else None
        u64 = (bn_copy(leaves64[0]) if bn_copy is not None else
               torch.nn.functional.batch_norm(leaves64[0], None, None, bn64.weight, bn64.bias,
                                              True, 0.0, bn64.eps))
        kin = {"u": u64, "w1": se64.fc1.weight.flatten(1), "b1": se64.fc1.bias,
               "w2": se64.fc2.weight.flatten(1), "b2": se64.fc2.bias,
               "identity": leaves64[1] if identity is not None else None}
    kinks = at_kinks(kin, case, dtype)
    names = [*["x", "identity"][:len(leaves)], "bn.weight", "bn.bias", "fc1.weight",
             "fc1.bias", "fc2.weight", "fc2.bias"]
    for name, a, b in zip(names, got, exp, strict=True):
        if name in ("x", "identity"):
            a, b = a[~kinks], b[~kinks]
        tol_dtype = a.dtype if name in ("x", "identity") else param_dtype
        assert_close(a, b.view_as(a), tol_dtype, name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", BN_CASES, ids=str)
def test_bn_folded_op_cpu(case: Case, training: bool) -> None:
    """The op's CPU path (torch.ops.sedsl.se_bn_block, run by the module under
    trace_fused_op) equals nn.BatchNorm2d + the SE block."""
    from sedsl.pytorch.export import trace_fused_op

    with trace_fused_op():
        check_bn_block((2, 16, 5, 5), case, torch.float32, False, training)


def test_bn_folded_op_gradcheck_and_opcheck() -> None:
    x, identity, bn, se = make_bn_block((2, 6, 3, 3), SE_RESNET)
    bn, se = bn.double(), se.double()
    x = x.double().requires_grad_()
    ident = identity.double().requires_grad_()
    for training in (True, False):
        bn.train(training)
        w = [bn.weight, bn.bias, se.fc1.weight.flatten(1), se.fc1.bias, se.fc2.weight.flatten(1),
             se.fc2.bias]
        state = [t.clone() for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]

        def f(x: Tensor, i: Tensor, *w: Tensor, state: list[Tensor] = state,
              training: bool = training) -> Tensor:
            out: Tensor = torch.ops.sedsl.se_bn_block(
                x, w[0], w[1], *state, *w[2:], i, training, 0.1, 1e-5, "avg", "relu",
                "sigmoid", "relu")[0]
            return out

        assert torch.autograd.gradcheck(f, (x, ident, *w))
        args = (x, w[0], w[1], *state, *w[2:], ident, training, 0.1, 1e-5, "avg", "relu",
                "sigmoid", "relu")
        torch.library.opcheck(torch.ops.sedsl.se_bn_block.default, args)


# --- ECA: a 1-D convolution over channels as the transform (sedsl::eca_block) ---------------------

ECA_CASES = [(3, "zero", "none", False), (5, "circular", "relu", True),
             (3, "circular", "none", False),
             (7, "zero", "relu", True)]


def torch_eca(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, act: str) -> Tensor:
    """ECA in float64 as timm's EcaModule / CecaModule compute it: mean over H*W, Conv1d over
    the (N, 1, C) vector (circular padding by F.pad), sigmoid, scale; then shortcut and act."""
    k = w.numel()
    z = u.double().mean((2, 3))[:, None]  # (N, 1, C)
    if padding == "circular":
        y = F.conv1d(F.pad(z, ((k - 1) // 2,) * 2, mode="circular"), w.double().view(1, 1, k))
    else:
        y = F.conv1d(z, w.double().view(1, 1, k), padding=(k - 1) // 2)
    out = u.double() * torch.sigmoid(y).view(u.shape[0], -1, 1, 1)
    if identity is not None:
        out = out + identity.double()
    return MODULES[act]()(out)


def block_inputs(shape: tuple[int, int, int, int], identity: bool, dtype: torch.dtype,
                 channels_last: bool, seed: int, device: str
                 ) -> tuple[torch.Generator, Tensor, Tensor | None]:
    """A seeded generator (for the block's own parameters next), U and the identity (or None),
    random, in `dtype` and the layout asked for."""
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    u = torch.randn(shape, generator=gen).to(device, dtype).contiguous(memory_format=fmt)
    ident = torch.randn(shape, generator=gen).to(device, dtype).contiguous(memory_format=fmt) \
        if identity else None
    return gen, u, ident


def check_eca(shape: tuple[int, int, int, int], k: int, padding: str, act: str, identity: bool,
              dtype: torch.dtype = torch.float32, channels_last: bool = False,
              seed: int = 0, device: str = "cpu") -> None:
    """eca_block's output and the gradients of U, w and the identity against torch_eca's."""
    from sedsl.pytorch.kernels import eca_block

    gen, u, ident = block_inputs(shape, identity, dtype, channels_last, seed, device)
    w = torch.randn(k, generator=gen).to(device)
    leaves = [u.requires_grad_(), w.requires_grad_(),
              *([ident.requires_grad_()] if ident is not None else [])]
    out = eca_block(u, w, ident, padding=padding, act=act)
    assert out.dtype == u.dtype and out.stride() == torch.empty_like(u).stride()
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    want = torch_eca(leaves64[0], leaves64[1], leaves64[2] if identity else None, padding, act)
    assert_close(out, want, dtype)
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    got = torch.autograd.grad(out, leaves, grad)
    exp = torch.autograd.grad(want, leaves64, grad.double())
    for name, a, b in zip(("u", "w", "identity"), got, exp, strict=False):
        assert_close(a, b, dtype if name != "w" else torch.float32, name)


@pytest.mark.parametrize(("k", "padding", "act", "identity"), ECA_CASES,
                         ids=lambda v: str(v))
def test_eca_op_cpu(k: int, padding: str, act: str, identity: bool) -> None:
    check_eca((2, 16, 5, 5), k, padding, act, identity)


def test_eca_matches_timm_and_passes_opcheck() -> None:
    """EfficientChannelAttention has timm's EcaModule / CecaModule state-dict keys and output;
    the op passes gradcheck (float64, its CPU backward) and opcheck."""
    from sedsl.pytorch.kernels import EfficientChannelAttention, eca_block

    timm_eca = pytest.importorskip("timm.layers.eca")
    x = torch.randn(2, 32, 6, 6)
    for theirs, padding in ((timm_eca.EcaModule(kernel_size=5), "zero"),
                            (timm_eca.CecaModule(kernel_size=3), "circular")):
        ours = EfficientChannelAttention(theirs.conv.weight.shape[-1], padding)
        ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))
            torch.testing.assert_close(eca_block(x, ours.conv.weight, padding=padding), theirs(x))
    u = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    i = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    for padding in ("zero", "circular"):
        assert torch.autograd.gradcheck(
            lambda u, w, i, p=padding: eca_block(u, w, i, padding=p, act="silu"), (u, w, i))
        torch.library.opcheck(torch.ops.sedsl.eca_block.default,
                              (u, w, i, padding, "sigmoid", "relu"))



# --- Gather-Excite's parameter-free form: no transform (sedsl::ge_block) -------------------------

GE_CASES = [("sigmoid", "none", False), ("sigmoid", "relu", True), ("hardsigmoid", "silu", True),
            ("tanh", "none", True)]


def torch_ge(u: Tensor, identity: Tensor | None, gate: str, act: str) -> Tensor:
    """Gather-Excite theta-minus in float64 as timm's GatherExcite (extent 0, no MLP) computes
    it: x * gate(mean over H*W); then shortcut and act."""
    out = u.double() * MODULES[gate]()(u.double().mean((2, 3), keepdim=True))
    if identity is not None:
        out = out + identity.double()
    return MODULES[act]()(out)


def check_ge(shape: tuple[int, int, int, int], gate: str, act: str, identity: bool,
             dtype: torch.dtype = torch.float32, channels_last: bool = False,
             seed: int = 0, device: str = "cpu") -> None:
    """ge_block's output and the gradients of U and the identity against torch_ge's."""
    from sedsl.pytorch.kernels import ge_block

    gen, u, ident = block_inputs(shape, identity, dtype, channels_last, seed, device)
    leaves = [u.requires_grad_(), *([ident.requires_grad_()] if ident is not None else [])]
    out = ge_block(u, ident, gate=gate, act=act)
    assert out.dtype == u.dtype and out.stride() == torch.empty_like(u).stride()
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    want = torch_ge(leaves64[0], leaves64[1] if identity else None, gate, act)
    assert_close(out, want, dtype)
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    got = torch.autograd.grad(out, leaves, grad)
    exp = torch.autograd.grad(want, leaves64, grad.double())
    for name, a, b in zip(("u", "identity"), got, exp, strict=False):
        assert_close(a, b, dtype, name)


@pytest.mark.parametrize(("gate", "act", "identity"), GE_CASES, ids=lambda v: str(v))
def test_ge_op_cpu(gate: str, act: str, identity: bool) -> None:
    check_ge((2, 16, 5, 5), gate, act, identity)


def test_ge_module_and_opcheck() -> None:
    """GatherExcite has no state-dict keys and computes timm's GatherExcite (extent 0, no MLP);
    the op passes gradcheck (float64, its CPU backward) and opcheck."""
    from sedsl.pytorch.kernels import GatherExcite, ge_block

    timm_ge = pytest.importorskip("timm.layers.gather_excite")
    ours, theirs = GatherExcite(), timm_ge.GatherExcite(32, use_mlp=False)
    assert not ours.state_dict()
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        torch.testing.assert_close(ge_block(x), theirs(x))
    u = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    i = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, i: ge_block(u, i, act="silu"), (u, i))
    assert torch.autograd.gradcheck(lambda u: ge_block(u, gate="tanh"), (u,))
    torch.library.opcheck(torch.ops.sedsl.ge_block.default, (u, i, "sigmoid", "relu"))
    torch.library.opcheck(torch.ops.sedsl.ge_block.default, (u, None, "hardsigmoid", "none"))


# --- GCT: the L2 embedding normalised across channels (sedsl::gct_block) -------------------------

GCT_CASES = [("tanh", "none", False), ("tanh", "relu", True), ("sigmoid", "silu", True)]


def torch_gct(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
              gate: str, act: str, eps: float = 1e-5) -> Tensor:
    """GCT in float64 as the official code (z-x-yang/GCT, mode l2) computes it, with `gate` for
    its tanh; then shortcut and act."""
    u = u.double()
    a, g, b = (p.double().view(1, -1, 1, 1) for p in (alpha, gamma, beta))
    embedding = (u.pow(2).sum((2, 3), keepdim=True) + eps).pow(0.5) * a
    norm = g / (embedding.pow(2).mean(dim=1, keepdim=True) + eps).pow(0.5)
    out = u * (1.0 + MODULES[gate]()(embedding * norm + b))
    if identity is not None:
        out = out + identity.double()
    return MODULES[act]()(out)


def check_gct(shape: tuple[int, int, int, int], gate: str, act: str, identity: bool,
              dtype: torch.dtype = torch.float32, channels_last: bool = False,
              seed: int = 0, device: str = "cpu") -> None:
    """gct_block's output and the gradients of U, alpha, gamma, beta and the identity against
    torch_gct's (parameters drawn around the release's start, so that every term counts)."""
    from sedsl.pytorch.kernels import gct_block

    gen, u, ident = block_inputs(shape, identity, dtype, channels_last, seed, device)
    c = shape[1]
    alpha = (1 + 0.5 * torch.randn(1, c, 1, 1, generator=gen)).to(device)
    gamma, beta = (torch.randn(1, c, 1, 1, generator=gen).to(device) for _ in range(2))
    leaves = [u.requires_grad_(), alpha.requires_grad_(), gamma.requires_grad_(),
              beta.requires_grad_(), *([ident.requires_grad_()] if ident is not None else [])]
    out = gct_block(u, alpha, gamma, beta, ident, gate=gate, act=act)
    assert out.dtype == u.dtype and out.stride() == torch.empty_like(u).stride()
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    want = torch_gct(*leaves64[:4], leaves64[4] if identity else None, gate, act)
    assert_close(out, want, dtype)
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    got = torch.autograd.grad(out, leaves, grad)
    exp = torch.autograd.grad(want, leaves64, grad.double())
    for name, a, b in zip(("u", "alpha", "gamma", "beta", "identity"), got, exp, strict=False):
        assert a.shape == b.shape, name
        assert_close(a, b, dtype if name in ("u", "identity") else torch.float32, name)


@pytest.mark.parametrize(("gate", "act", "identity"), GCT_CASES, ids=lambda v: str(v))
def test_gct_op_cpu(gate: str, act: str, identity: bool) -> None:
    check_gct((2, 16, 5, 5), gate, act, identity)


def test_gct_module_and_opcheck() -> None:
    """GatedChannelTransformation has the plain lowering's GCTNorm keys under `norm` and
    computes the official GCT module; the op passes gradcheck (float64, its CPU backward) and
    opcheck."""
    from sedsl.pytorch.kernels import GatedChannelTransformation, gct_block
    from tests.attention_references import GCT

    ours, theirs = GatedChannelTransformation(32), GCT(32)
    assert sorted(ours.state_dict()) == ["norm.alpha", "norm.beta", "norm.gamma"]
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours.norm.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        torch.testing.assert_close(gct_block(x, theirs.alpha, theirs.gamma, theirs.beta),
                                   theirs(x))
    u = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    i = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    a, g, b = (torch.randn(6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda u, a, g, b, i: gct_block(u, a, g, b, i, act="silu"),
                                    (u, a, g, b, i))
    assert torch.autograd.gradcheck(lambda u, a, g, b: gct_block(u, a, g, b, gate="sigmoid"),
                                    (u, a, g, b))
    torch.library.opcheck(torch.ops.sedsl.gct_block.default, (u, a, g, b, i, 1e-5, "tanh", "relu"))
    torch.library.opcheck(torch.ops.sedsl.gct_block.default, (u, a, g, b, None, 1e-5, "tanh",
                                                              "none"))


# --- on a GPU (the Triton kernels compiled; skipped elsewhere) ------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bn_folded_cuda(dtype: torch.dtype) -> None:
    for training in (True, False):
        for case in BN_CASES[:2]:
            check_bn_block((4, 64, 14, 14), case, dtype, True, training, device="cuda")
    check_bn_block((1, 256, 56, 56), SE_RESNET, dtype, True, True, device="cuda")
    check_bn_block((2, 96, 8, 8), BN_CASES[2], dtype, False, True, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_eca_cuda(dtype: torch.dtype) -> None:
    for k, padding, act, identity in ECA_CASES:
        check_eca((4, 64, 14, 14), k, padding, act, identity, dtype, True, device="cuda")
    check_eca((1, 256, 56, 56), 5, "circular", "relu", True, dtype, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_ge_cuda(dtype: torch.dtype) -> None:
    for gate, act, identity in GE_CASES:
        check_ge((4, 64, 14, 14), gate, act, identity, dtype, True, device="cuda")
    check_ge((1, 256, 56, 56), "sigmoid", "relu", True, dtype, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gct_cuda(dtype: torch.dtype) -> None:
    for gate, act, identity in GCT_CASES:
        check_gct((4, 64, 14, 14), gate, act, identity, dtype, True, device="cuda")
    check_gct((1, 256, 56, 56), "tanh", "relu", True, dtype, device="cuda")
    check_gct((2, 2048, 7, 7), "tanh", "relu", True, dtype, device="cuda")  # C over a tile


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_repeated_calls_cuda() -> None:
    """The second call of a shape launches the cached compiled kernels directly
    (sedsl.pytorch.kernels.launch): new data, the same right answers."""
    for seed in (0, 1, 2):
        check_block(make_inputs((8, 128, 28, 28), 8, SE_RESNET, torch.bfloat16, True,
                                seed=seed, device="cuda"), SE_RESNET)


# --- the generic transform's ops: sedsl::channel_stats, sedsl::channel_apply ---------------------


@pytest.mark.parametrize(("act", "identity"), [("relu", True), ("none", True), ("silu", False),
                                                ("none", False)])
def test_channel_apply_gradcheck_and_opcheck(act: str, identity: bool) -> None:
    """act(U * s + identity) on the CPU path (float64), against finite differences; the op's
    registration (fake, autograd) by opcheck."""
    from sedsl.pytorch.kernels import channel_apply

    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=gen).requires_grad_()
    s = torch.rand(2, 4, 1, 1, dtype=torch.float64, generator=gen).requires_grad_()
    i = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=gen).requires_grad_() \
        if identity else None
    args = (u, s, i) if i is not None else (u, s)
    assert torch.autograd.gradcheck(
        lambda *a: channel_apply(a[0], a[1], a[2] if identity else None, act), args)
    want = u * s + (i if i is not None else 0)
    torch.testing.assert_close(channel_apply(u, s, i, act),
                               torch.relu(want) if act == "relu" else
                               torch.nn.functional.silu(want) if act == "silu" else want)
    torch.library.opcheck(torch.ops.sedsl.channel_apply, (u, s, i, act))


@pytest.mark.parametrize("statistic", ["avg", "avgstd"])
def test_channel_stats_gradcheck_and_opcheck(statistic: str) -> None:
    """The mean (and SRM's unbiased std) over H x W: torch's values and finite differences."""
    from sedsl.pytorch.kernels import channel_stats

    u = torch.randn(2, 4, 3, 5, dtype=torch.float64).requires_grad_()
    want = u.mean((2, 3), keepdim=True)
    if statistic == "avgstd":
        want = torch.cat([want, u.std((2, 3), keepdim=True)], 3)
    torch.testing.assert_close(channel_stats(u, statistic), want)
    assert torch.autograd.gradcheck(lambda t: channel_stats(t, statistic), (u,))
    torch.library.opcheck(torch.ops.sedsl.channel_stats, (u, statistic))


@pytest.mark.parametrize("variant", ["se_bn", "srm"])
def test_generic_transform_compiles_fullgraph(variant: str) -> None:
    """torch.compile (fullgraph, aot_eager: the ops' fake implementations and registered
    autograd, not inductor's code) traces a fused network with the generic transform's ops,
    BN in training, forward and backward, to the plain lowering's values."""
    from pathlib import Path

    import sedsl
    from sedsl.pytorch.export import trace_fused_op

    text = ('use "lib/resnet.se"\nnetwork tiny {\n  input 3x12x12\n'
            "  stem = { conv(8, 3) bn relu }\n  conv2 = bottleneck(4)\n  head = classifier(3)\n}\n"
            f"se {{\n  variant = {variant}\n  at residual.end\n}}\n")
    net = sedsl.loads(text, path=str(Path(__file__).resolve().parents[1] / "specs" / "t.se"))
    plain, fused = net.to_torch(fused=False).train(), net.to_torch().train()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 12, 12)
    want = plain(x)
    want.square().sum().backward()
    torch._dynamo.reset()
    with trace_fused_op():
        got = torch.compile(fused, fullgraph=True, backend="aot_eager")(x)
        got.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
