"""The model's hyper-parameters: one flat dataclass.

Field names follow the official ``config.json`` of ``state-spaces/mamba-*`` (the ``ssm_cfg``
entries are flattened to the top level); the letters in the comments are the paper's
(Gu & Dao 2023, arXiv 2312.00752, Section 3 and Appendix E). Converting to and from the nested
official form and the Hugging Face key names is :mod:`minimamba_core.checkpoint`'s job.

Built in notebook ``06_language_model``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DT_INIT_CHOICES = ("random", "constant")


@dataclass
class MambaConfig:
    """Hyper-parameters of a Mamba language model.

    Args:
        d_model: width of the residual stream, D.
        n_layer: number of residual blocks.
        vocab_size: number of real tokens; the embedding has ``padded_vocab_size`` rows.
        d_state: SSM state size per channel, N.
        d_conv: width of the causal depthwise convolution, k.
        expand: expansion factor E; ``d_inner = expand * d_model``.
        dt_rank: rank R of the delta projection, or ``"auto"`` for ``ceil(d_model / 16)``.
        dt_min, dt_max: range (in units of the discretization step) of the log-uniform
            initial delta.
        dt_init: ``"random"`` (uniform in ``+-dt_rank**-0.5 * dt_scale``) or ``"constant"``
            initialization of ``dt_proj.weight``.
        dt_scale: scale of that initialization.
        dt_init_floor: lower clamp of the initial delta.
        conv_bias: whether ``conv1d`` has a bias.
        bias: whether ``in_proj`` and ``out_proj`` have biases.
        pad_vocab_size_multiple: the embedding's rows are rounded up to a multiple of this.
        tie_embeddings: whether ``lm_head.weight`` is ``backbone.embedding.weight``.
        rms_norm_eps: epsilon inside every RMSNorm.
        residual_in_fp32: keep the residual stream in float32 whatever the model dtype.

    Derived (read-only, not constructor arguments): ``d_inner``, ``padded_vocab_size``;
    ``dt_rank`` is replaced by its integer value.

    Raises:
        ValueError: naming the field, for non-positive sizes, an unknown ``dt_init``,
            ``dt_min > dt_max`` and similar nonsense.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16  # N
    d_conv: int = 4  # k, the convolution width
    expand: int = 2  # E
    dt_rank: int | str = "auto"  # R
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    d_inner: int = field(init=False)  # E * D
    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {value!r}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        elif isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int) or self.dt_rank <= 0:
            raise ValueError(f"MambaConfig.dt_rank must be a positive int or 'auto', got {self.dt_rank!r}")
        if self.dt_init not in DT_INIT_CHOICES:
            raise ValueError(f"MambaConfig.dt_init must be one of {DT_INIT_CHOICES}, got {self.dt_init!r}")
        for name in ("dt_min", "dt_max", "dt_scale", "dt_init_floor", "rms_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"MambaConfig.{name} must be a positive number, got {value!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"MambaConfig.dt_min ({self.dt_min}) must be <= dt_max ({self.dt_max})")
        for name in ("conv_bias", "bias", "tie_embeddings", "residual_in_fp32"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        self.d_inner = self.expand * self.d_model
        multiple = self.pad_vocab_size_multiple
        self.padded_vocab_size = math.ceil(self.vocab_size / multiple) * multiple

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as a flat, JSON-serializable dict (derived fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MambaConfig":
        """Build from :meth:`to_dict`'s output.

        Raises:
            ValueError: for a key that is not a field (a typo must not be silently dropped).
        """
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MambaConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)
