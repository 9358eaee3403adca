"""Plain-torch references for the attention variants that timm does not ship (or cannot build):
each follows its authors' released code, computation by computation and in the same order, with
the same parameter shapes and initialisation. Nothing here reads sedsl: these are the oracles
tests/test_variants_refs.py compares sedsl's variants with.

scSE has no module here: segmentation_models_pytorch's own `SCSEModule` is the reference (a test
dependency)."""

from __future__ import annotations

import torch
from torch import nn


class SRM(nn.Module):
    """Style-based Recalibration (Lee et al. 2019), as `SRMLayer` of the authors' release:
    hyunjaelee410/style-based-recalibration-module, models/recalibration_modules.py at commit
    be1624130050763d2cb6c9eec4c05b92a0f88c2f. Style pooling: per channel the mean and the
    unbiased standard deviation (`Tensor.std`, no epsilon) over H x W; style integration: the
    channel-wise FC `cfc` (C x 2, zero-initialised) weights and sums the two, then BatchNorm2d
    and a sigmoid; x * g."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)
        self.activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        flat = x.view(n, c, -1)
        mean = flat.mean(dim=2).view(n, c, -1)
        std = flat.std(dim=2).view(n, c, -1)
        t = torch.cat((mean, std), dim=2)  # N x C x 2
        z = (t * self.cfc[None, :, :]).sum(dim=2)[:, :, None, None]  # N x C x 1 x 1
        g: torch.Tensor = self.activation(self.bn(z))
        return x * g


class GCT(nn.Module):
    """Gated Channel Transformation (Yang et al. 2020), mode 'l2', as `GCT` of the authors'
    release: z-x-yang/GCT, PyTorch/GCT.py at commit 9f2d1f0788234120f03b9468fa8c03449505b43a.
    The embedding is the L2 norm over H x W (epsilon 1e-5 inside the root) times alpha, normalised
    by the root mean square over channels (epsilon 1e-5) times gamma; gate 1 + tanh(. + beta).
    alpha ones, gamma and beta zeros, each 1 x C x 1 x 1."""

    def __init__(self, channels: int, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.epsilon).pow(0.5) * self.alpha
        norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.epsilon).pow(0.5)
        return x * (1.0 + torch.tanh(embedding * norm + self.beta))


class SimAM(nn.Module):
    """SimAM (Yang et al. 2021), as `simam_module` of the authors' release: ZjjConan/SimAM,
    mmdetection/mmdet/models/backbones/attentions/simam_module.py at commit
    9a2b154c6d802209314e96ac3ba381550317d9e3. Per element the inverse energy
    (x - mu)^2 / (4 (sum (x - mu)^2 / (HW - 1) + lambda)) + 1/2, lambda 1e-4; x * sigmoid(.).
    No parameters."""

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.activation = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        g: torch.Tensor = self.activation(y)
        return x * g


class GatherExcite(nn.Module):
    """Gather-Excite at global extent (Hu et al. 2018, arXiv 1810.12348): x * sigmoid(xi(x)).

    - theta-minus (`gather="mean"`, `mlp=False`): xi = the mean over H x W, no parameters
      (timm's GatherExcite(C, use_mlp=False) computes the same; tests check that too).
    - theta (`gather="conv"`): xi = a depthwise conv whose kernel is the whole map, no bias, then
      BatchNorm2d: the authors' Caffe release, hujie-frank/GENet models/RN50-GEP.prototxt at
      commit ae791f84056bc72aa1ac30ccee234e3e9f696e28 (`convN_M/gather`, DepthwiseConvolution,
      bias_term false, kernel_size = the map; `gather/bn`; `excite/sigmoid`).
    - theta-plus (`gather="conv"`, `mlp=True`): after the gather's BN a ReLU, then 1x1 conv to
      rd with bias, ReLU, 1x1 conv back to C with bias (RN50-GEPP.prototxt, same commit:
      `gather/relu`, `excite/1x1_down`, its relu, `excite/1x1_up`).
    - `gather="mean"`, `mlp=True`: the mean, then the same MLP: timm's GatherExcite defaults
      (extent 0, no extra params, ConvMlp), which timm 1.0.x cannot construct (`*dd`).

    rd = timm's make_divisible(C / 16, 1, round_limit=0): C / 16 rounded to the nearest integer,
    at least 1 (the release's C / 16 on ResNet widths)."""

    def __init__(self, channels: int, feat_size: tuple[int, int] | None = None,
                 gather: str = "mean", mlp: bool = False) -> None:
        super().__init__()
        self.gather: nn.Module | None = None
        if gather == "conv":
            assert feat_size is not None, "the conv gather's kernel is the whole feature map"
            self.gather = nn.Sequential(
                nn.Conv2d(channels, channels, feat_size, groups=channels, bias=False),
                nn.BatchNorm2d(channels))
        rd = max(1, int(channels / 16 + 0.5))
        self.mlp: nn.Module = nn.Identity()
        if mlp:
            pre: list[nn.Module] = [nn.ReLU()] if gather == "conv" else []
            self.mlp = nn.Sequential(*pre, nn.Conv2d(channels, rd, 1), nn.ReLU(),
                                     nn.Conv2d(rd, channels, 1))
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean((2, 3), keepdim=True) if self.gather is None else self.gather(x)
        gate: torch.Tensor = self.gate(self.mlp(g))
        return x * gate
