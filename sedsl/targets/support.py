"""Helper classes and functions that generated model code defines when its ops need them
(`support` of an op's lowering in sedsl.ir.ops): torch source as text, written once at the top of
model.py, so that the file stands alone. Each mirrors its reference's computation and parameter
names, so that weights copy across and outputs agree."""

from __future__ import annotations

SUPPORT: dict[str, str] = {
    # timm.layers.LayerNorm2d: layer norm over the channels of each position.
    "LayerNorm2d": '''
class LayerNorm2d(nn.LayerNorm):
    """Layer norm over channels (N, C, H, W), as timm's LayerNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)''',
    # timm.layers.EvoNorm2dS0: x * sigmoid(v x) / group_std(x) * weight + bias, computed alike.
    "EvoNormS0": '''
class EvoNormS0(nn.Module):
    """EvoNorm-S0 as timm's EvoNorm2dS0 (act=False: x * weight + bias); with norm=True and
    act=False, EvoNorm2dS0a's x / group_std(x) * weight + bias."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5,
                 act: bool = True, norm: bool = True) -> None:
        super().__init__()
        self.groups, self.eps, self.norm = groups, eps, norm or act
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels)) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm:
            n, c, h, w = x.shape
            g = x.reshape(n, self.groups, c // self.groups, h, w)
            std = g.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(self.eps)
            std = std.sqrt().to(x.dtype).expand(g.shape).reshape(n, c, h, w)
            if self.v is not None:
                x = x * (x * self.v.view(1, -1, 1, 1)).sigmoid()
            x = x / std
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)''',
    # timm.layers.GlobalResponseNorm (ConvNeXt-V2), channels-first.
    "GlobalResponseNorm": '''
class GlobalResponseNorm(nn.Module):
    """x + weight * x * n + bias, n = the L2 norm over H x W over its mean over channels."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.norm(p=2, dim=(2, 3), keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1),
                                 x * n)''',
    # timm.layers.SimpleNorm2d: x / sqrt(var over C + eps) * weight (not centred, no bias).
    "SimpleNorm2d": '''
class SimpleNorm2d(nn.Module):
    """x * rsqrt(var_c(x) + eps) * weight at each position, as timm's SimpleNorm2d."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.var(x, dim=1, keepdim=True)
        return x * torch.rsqrt(v + self.eps) * self.weight.view(1, -1, 1, 1)''',
    # A learned scale per channel (ConvNeXt's layer scale), its weight of C values.
    "LayerScale": '''
class LayerScale(nn.Module):
    """x times a learned scale per channel (ConvNeXt's layer scale)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.view(1, -1, 1, 1) * x''',
    # scale * x + bias with one learned value each (HGNetV2's LearnableAffineBlock).
    "Affine": '''
class Affine(nn.Module):
    """x times a learned scalar plus a learned scalar (HGNetV2's learnable affine block)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias''',
    # Filter response normalisation, as timm's FilterResponseNormTlu2d (tlu) / ...Act2d.
    "FilterResponseNorm": '''
class FilterResponseNorm(nn.Module):
    """x / sqrt(mean over H x W of x^2 + eps), times a weight plus a bias per channel; with
    `tlu`, then max(y, tau) with a learned tau per channel."""

    def __init__(self, channels: int, eps: float = 1e-5, tlu: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels)) if tlu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.square().float().mean(dim=(2, 3), keepdim=True).add(self.eps).rsqrt()
        x = x * rms.to(x.dtype) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return x if self.tau is None else torch.maximum(x, self.tau.view(1, -1, 1, 1))''',
    # A learned scalar gain (NF-Nets' skipinit_gain): its weight of shape ().
    "Gain": '''
class Gain(nn.Module):
    """x times a learned scalar (NF-Nets' skipinit gain)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight''',
    # Weight standardisation as timm's StdConv2d and ScaledStdConv2d compute it: a training-mode
    # batch_norm of the weight per output channel (biased variance, eps), with `gain` also times
    # the learned gain and gamma / sqrt(fan-in); the same keys (`weight`, `bias`, `gain`).
    "StdConv": '''
class StdConv(nn.Conv2d):
    """A conv whose weight is standardised per output channel in the forward (timm's
    StdConv2d; with `gain`, ScaledStdConv2d)."""

    def __init__(self, *args: object, eps: float = 1e-6, gamma: float = 1.0, gain: bool = False,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps
        self.scale = gamma * self.weight[0].numel() ** -0.5  # gamma / sqrt(fan-in)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affine = None if self.gain is None else (self.gain * self.scale).view(-1)
        weight = nn.functional.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None, weight=affine,
            training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return nn.functional.conv2d(x, weight, self.bias, self.stride, self.padding,
                                    self.dilation, self.groups)''',
    # Anti-aliased downsampling as timm's BlurPool2d: its binomial filter, computed alike.
    "BlurPool": '''
class BlurPool(nn.Module):
    """Pad (reflect or zeros), then a fixed binomial filter per channel at a stride."""

    def __init__(self, channels: int, size: int, stride: int, reflect: bool = True) -> None:
        super().__init__()
        import math

        self.channels, self.stride, self.pad = channels, stride, (size - 1) // 2
        self.mode = "reflect" if reflect else "constant"
        taps = torch.tensor([math.comb(size - 1, k) for k in range(size)],
                            dtype=torch.float32) / (2 ** (size - 1))
        filt = (taps[:, None] * taps[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (self.pad,) * 4, mode=self.mode)
        return nn.functional.conv2d(x, self.filt, stride=self.stride, groups=self.channels)''',
    # Attention across branches (ResNeSt's SplitAttn after its conv, SKNet's SelectiveKernelAttn
    # and weighting): parameters named as ResNeSt's, its RadixSoftmax channel order.
    "SplitAttention": '''
class SplitAttention(nn.Module):
    """radix branches of C channels (concatenated) weighted per channel by a softmax over the
    branches of an MLP of their pooled sum, and summed."""

    def __init__(self, channels: int, radix: int, rd: int, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        self.radix, self.groups = radix, groups
        self.fc1 = nn.Conv2d(channels, rd, 1, groups=groups, bias=bias)
        self.bn1 = nn.BatchNorm2d(rd)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels * radix, 1, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, rc, h, w = x.shape
        x = x.reshape(n, self.radix, rc // self.radix, h, w)
        gap = x.sum(1).mean((2, 3), keepdim=True)
        attn = self.fc2(self.act1(self.bn1(self.fc1(gap))))
        if self.radix == 1:
            return x[:, 0] * torch.sigmoid(attn)
        attn = attn.view(n, self.groups, self.radix, -1).transpose(1, 2).softmax(1)
        return (x * attn.reshape(n, self.radix, rc // self.radix, 1, 1)).sum(1)''',
    # nn.Linear over the channels of each position of an (N, C, H, W) tensor (ConvNeXt's MLP).
    "ChannelLinear": '''
class ChannelLinear(nn.Linear):
    """A linear layer over the channels of each position, as ConvNeXt applies nn.Linear to its
    channels-last tensor (the weight in nn.Linear's layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x.permute(0, 2, 3, 1), self.weight, self.bias)
        return y.permute(0, 3, 1, 2)''',
    # timm's EcaModule / CecaModule conv: the Conv1d over the squeezed channels, shaped back.
    "ChannelConv": '''
class ChannelConv(nn.Conv1d):
    """ECA's 1-D conv across channels: a C x 1 x 1 vector (or F x C x 1, F features per
    channel) read as a sequence over the C channels, convolved, returned as C x 1 x 1 (or
    out_channels x C x 1), the node's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = self._conv_forward(x.reshape(n, self.in_channels, -1), self.weight, self.bias)
        return y.reshape(n, -1, 1, 1) if self.out_channels == 1 else y.unsqueeze(-1)''',
    # GCT (z-x-yang/GCT, mode l2) after its L2 embedding: alpha, gamma, beta of 1 x C x 1 x 1.
    "GCTNorm": '''
class GCTNorm(nn.Module):
    """GCT's channel normalisation of the L2 embedding: gamma * e / rms_c(e) + beta, e = alpha s."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        embedding = s * self.alpha
        norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        return embedding * norm + self.beta''',
    # SRM (hyunjaelee410/style-based-recalibration-module): the channel-wise FC of its style.
    "StyleFC": '''
class StyleFC(nn.Module):
    """SRM's style integration: per channel, mean and std weighted by `cfc` (C x 2), summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (N, C, 1, 2): mean, std
        return (t.flatten(2) * self.cfc[None, :, :]).sum(dim=2)[:, :, None, None]''',
    # SimAM (ZjjConan/SimAM): the energy before its sigmoid.
    "simam_energy": '''
def simam_energy(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """SimAM's per-element energy: (x - mu)^2 / (4 (sum (x - mu)^2 / (HW - 1) + lambda)) + 0.5."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    return d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + e_lambda)) + 0.5''',
}
