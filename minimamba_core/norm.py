"""RMSNorm (Zhang & Sennrich 2019), the normalization of every Mamba block.

``y = x / sqrt(mean(x**2) + eps) * weight``, computed in float32 (float64 for float64 input),
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
        acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 input
        x_acc = x.to(acc)  # (..., d)
        rstd = torch.rsqrt(x_acc.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return (x_acc * rstd * self.weight.to(acc)).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
