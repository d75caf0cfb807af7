"""RMSNorm (Zhang & Sennrich 2019), the normalization of every Mamba block, and Mamba-2's gated form.

``y = x / sqrt(mean(x**2) + eps) * weight``, computed in float32 (float64 for float64 input),
as the official ``rms_norm_ref`` does (mamba_ssm/ops/triton/layer_norm.py). Built in notebook
``05_mamba_block``; the gated, grouped form (:class:`RMSNormGated`) in ``13_mamba2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class RMSNormGated(nn.Module):
    """Mamba-2's gated, grouped RMSNorm: ``rmsnorm_per_group(x * silu(z)) * weight``.

    Args:
        d: size of the normalized (last) dimension, ``d_inner``.
        eps: added to each group's mean square before the square root.
        norm_before_gate: ``rmsnorm(x) * weight * silu(z)`` instead (the gate after the norm).
        group_size: the norm runs over each block of ``group_size`` channels on its own
            (``d_inner // ngroups`` in Mamba-2; ``None`` for one group of ``d``).

    Shapes: ``x, z (..., d)`` -> ``(..., d)`` in the dtype of ``weight``; arithmetic in float32
    (float64 for float64 input). ``z=None`` gives a plain grouped RMSNorm.

    Matches ``rms_norm_ref`` of ``mamba_ssm/ops/triton/layernorm_gated.py`` (state-spaces/mamba
    commit 60dadf2). Normalizing over all of ``d_inner`` instead of per group was a bug of
    several ports with ``ngroups > 1`` (transformers PR #35943, state-spaces PR #910).
    """

    def __init__(self, d: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 group_size: int | None = None) -> None:
        super().__init__()
        group_size = d if group_size is None else group_size
        if d % group_size != 0:
            raise ValueError(f"RMSNormGated: group_size={group_size} must divide d={d}")
        self.eps, self.norm_before_gate, self.group_size = eps, norm_before_gate, group_size
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64
        x = x.to(acc)  # (..., d)
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.to(acc))  # (..., d): the gate goes into the norm
        groups = x.unflatten(-1, (-1, self.group_size))  # (..., g, d/g)
        rstd = torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., g, 1)
        out = (groups * rstd).flatten(-2) * self.weight.to(acc)  # (..., d)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.to(acc))  # (..., d)
        return out.to(self.weight.dtype)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}")
