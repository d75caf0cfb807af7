"""RMSNorm (Zhang & Sennrich 2019), the normalization of every Mamba block.

``y = x / sqrt(mean(x**2) + eps) * weight``, computed in float32 whatever the input dtype,
as the official ``rms_norm_ref`` does (mamba_ssm/ops/triton/layer_norm.py). Built in notebook
``05_mamba_block``.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalization over the last dimension.

    Args:
        d: size of the normalized (last) dimension.
        eps: added to the mean square before the square root.

    Shapes: input ``(..., d)`` of any float dtype; output the same shape in the dtype of
    ``weight`` (the model's dtype), so a float32 residual stream feeds a bf16 mixer.
    """

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # (..., d)
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return (x32 * rstd * self.weight.float()).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
