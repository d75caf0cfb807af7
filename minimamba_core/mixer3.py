"""The Mamba-3 mixer (SISO): one input projection, normed and biased B and C, the Mamba-3 scan.

Mamba-3 (Lahoti et al. 2026, arXiv 2603.15569); the official counterpart is ``Mamba3`` in
``mamba_ssm/modules/mamba3.py`` (state-spaces/mamba commit e9594ce), whose parameter names and
initialization we keep::

    z, x, B, C, dd_dt, dd_A, trap, angles = in_proj(hidden).split(
        d_inner, d_inner, G N, G N, H, H, H, S)                     one projection, no convolution
    A   = -max(heavy_tail(dd_A), A_floor)                          (b, l, H): data-dependent decay
    dt  = softplus(dd_dt + dt_bias)                                (b, l, H)
    B, C = B_norm(B), C_norm(C)                                    RMSNorm over d_state (N)
    y   = mamba3_chunked(x, dt, A, B, C, trap, angles, B_bias, C_bias, D, z)   (mamba3.py)
    out = out_proj(y)                                              (b, l, d_model)

with ``heavy_tail(u) = 1 + u`` for ``u >= 0`` and ``1 / (1 - u)`` below, ``H = d_inner / headdim``
heads, ``G = ngroups`` groups sharing ``B`` and ``C``, ``N = d_state`` and ``S`` rotation angles
per token (``rope_fraction`` of the ``N / 2`` pairs), shared by all heads (each head turns them at
its own ``dt``). With ``is_outproj_norm`` the gate moves into a per-head RMSNorm,
``y = norm(y) * silu(z)``. Compared with Mamba-2 (``mixer2.py``): no short convolution (the
trapezoidal update mixes two neighbouring tokens itself), ``A`` comes from the input, ``B`` and
``C`` are normalized and get a learned bias, and ``B, C`` rotate by data-dependent angles.

Differences from the official module, all harmless: no GPU kernels; SISO only (``is_mimo`` is
refused by the config: MIMO would widen ``B``, ``C`` to ``mimo_rank`` columns per head, add the
``mimo_x``, ``mimo_z``, ``mimo_o`` projections and sum ``mimo_rank`` SISO scans sharing one
decay); the cache's ``k_state`` is ``(b, H, N)`` (official ``(b, 1, H, N)``, the MIMO rank axis)
and all four states are in the compute dtype (official: the previous ``B`` and ``x`` in the
weights' dtype); ``forward`` continues a cache at any ``seqlen_offset`` by the chunked form.
Precision as Mamba-2: the scan and states float32 (float64 in a float64 model), ``dt_bias``,
``B_bias``, ``C_bias`` and ``D`` float32 parameters in a half-precision model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .config import MambaConfig
from .mamba3 import mamba3_chunked, mamba3_sequential
from .mixer import SSMMixer, autocast_off
from .norm import RMSNorm, RMSNormGated

STATE_NAMES = ("angle_state", "ssm_state", "k_state", "v_state")


def heavy_tail(u: torch.Tensor) -> torch.Tensor:
    """``1 + u`` for ``u >= 0``, ``1 / (1 - u)`` for ``u < 0``: positive, smooth at 0 (official
    ``heavy_tail_activation``, the map from ``in_proj`` to ``-A``)."""
    return u.clamp_min(0) + torch.reciprocal(1 - u.clamp_max(0))


class Mamba3Mixer(SSMMixer):
    """One Mamba-3 (SISO) mixer, official names and initialization.

    Args:
        config: the model's :class:`MambaConfig` with ``ssm_cfg["layer"] == "Mamba3"``.
        layer_idx: this mixer's index, used to find its states in an :class:`InferenceCache`.

    Parameters (official names), with ``H = nheads``, ``G = ngroups``, ``N = d_state``, ``S``
    rotation angles: ``in_proj (2 d_inner + 2 G N + 3 H + S, d_model)``, ``dt_bias (H,)``,
    ``B_bias, C_bias (H, 1, N)``, ``B_norm.weight, C_norm.weight (N,)``, ``D (H,)``,
    ``norm.weight (d_inner,)`` (with ``is_outproj_norm``), ``out_proj (d_model, d_inner)``.

    Calls: ``forward(hidden, cache=None, attention_mask=None)`` ``(b, l, d_model) -> (b, l,
    d_model)``; ``step(hidden_t, cache)`` ``(b, 1, d_model) -> (b, 1, d_model)``; the cache entry
    of :meth:`state_shapes`: the rotation angles, the SSM state, the previous token's rotated
    ``k`` (biased ``B``) and its ``x``. The official ``Mamba3`` (mamba_ssm, commit e9594ce).

    Raises:
        ValueError: a config whose heads, groups or rotations do not fit, or ``is_mimo``
        (raised by :class:`MambaConfig`).
    """

    FLOAT32_PARAMS = ("dt_bias", "B_bias", "C_bias", "D")

    def __init__(self, config: MambaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d_inner, G, N, H = config.d_inner, config.ngroups, config.d_state, config.nheads
        assert H * config.headdim == d_inner and H % G == 0, "MambaConfig checks heads and groups"
        split = int(N * config.rope_fraction)
        self.num_rope_angles = (split - split % 2) // 2  # S: pairs that rotate
        assert self.num_rope_angles > 0, "MambaConfig checks that a pair rotates"
        self.sizes = [d_inner, d_inner, G * N, G * N, H, H, H, self.num_rope_angles]  # z x B C dt A trap angles
        self.in_proj = nn.Linear(config.d_model, sum(self.sizes), bias=False)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.B_bias = nn.Parameter(torch.empty(H, 1, N))  # (H, mimo_rank = 1, N)
        self.C_bias = nn.Parameter(torch.empty(H, 1, N))
        self.B_norm = RMSNorm(N, eps=1e-5)
        self.C_norm = RMSNorm(N, eps=1e-5)
        self.D = nn.Parameter(torch.empty(H))
        if config.is_outproj_norm:
            self.norm = RMSNormGated(d_inner, eps=1e-5, norm_before_gate=True, group_size=config.headdim)
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialization (``Mamba3.__init__`` and mamba_ssm's ``_init_weights``).

        * ``dt_bias = softplus^-1(dt)``, ``dt`` log-uniform in ``[dt_min, dt_max]``, clamped below
          at ``dt_init_floor``;
        * ``B_bias = C_bias = 1``; ``D = 1``; the norms' weights 1;
        * ``in_proj``/``out_proj`` as for Mamba-1/2 (``out_proj`` scaled by ``1/sqrt(n_layer)``).
        """
        cfg = self.config
        log_min, log_max = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(cfg.nheads) * (log_max - log_min) + log_min).clamp(min=cfg.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.B_bias.fill_(1.0)
        self.C_bias.fill_(1.0)
        self.D.fill_(1.0)
        for norm in (self.B_norm, self.C_norm) + ((self.norm,) if cfg.is_outproj_norm else ()):
            norm.weight.fill_(1.0)
        self.init_projections()

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        """``angle_state (b, H, S)``, ``ssm_state (b, H, P, N)``, ``k_state (b, H, N)``, ``v_state (b, H, P)``."""
        cfg = self.config
        H, P, N = cfg.nheads, cfg.headdim, cfg.d_state
        return {"angle_state": (batch_size, H, self.num_rope_angles), "ssm_state": (batch_size, H, P, N),
                "k_state": (batch_size, H, N), "v_state": (batch_size, H, P)}

    def _scan_args(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None):
        """``in_proj``, its split and the per-token SSM inputs in the compute dtype."""
        cfg = self.config
        H, P, G, N = cfg.nheads, cfg.headdim, cfg.ngroups, cfg.d_state
        z, x, B, C, dd_dt, dd_A, trap, angles = self.in_proj(hidden).split(self.sizes, dim=-1)
        acc = self.compute_dtype()
        x = x.unflatten(-1, (H, P)).to(acc)  # (b, l, H, P)
        B = self.B_norm(B.unflatten(-1, (G, N)).to(acc))  # (b, l, G, N)
        C = self.C_norm(C.unflatten(-1, (G, N)).to(acc))  # (b, l, G, N)
        A = -heavy_tail(dd_A.to(acc)).clamp_min(cfg.A_floor)  # (b, l, H)
        dt = F.softplus(dd_dt.to(acc) + self.dt_bias.to(acc))  # (b, l, H)
        angles = angles.to(acc)[:, :, None, :].expand(-1, -1, H, -1)  # (b, l, H, S): shared by the heads
        if attention_mask is not None:  # padded steps: no time passes (dt = 0), no input (x = 0)
            keep = attention_mask[:, :, None].to(acc)  # (b, l, 1)
            dt, x = dt * keep, x * keep[..., None]
        gate = None if cfg.is_outproj_norm else z.unflatten(-1, (H, P))  # (b, l, H, P)
        return dict(x=x, dt=dt, A=A, B=B, C=C, trap=trap.to(acc), angles=angles, B_bias=self.B_bias[:, 0].to(acc),
                    C_bias=self.C_bias[:, 0].to(acc), D=self.D.to(acc), z=gate), z

    def _out(self, y: torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``y (b, l, H, P)`` -> (per-head gated norm) -> ``out_proj`` -> ``(b, l, d_model)``."""
        y = y.flatten(-2)  # (b, l, d_inner)
        if self.config.is_outproj_norm:
            y = self.norm(y, z)  # rmsnorm_per_head(y) * weight * silu(z)
        return self.out_proj(y.to(dtype))

    def _mix(self, hidden, cache, attention_mask, scan):
        state = cache.layers[self.layer_idx] if cache is not None else None
        with autocast_off(hidden.device.type):
            args, z = self._scan_args(hidden, attention_mask)
            initial = tuple(state[k] for k in STATE_NAMES) if state is not None else None
            y, final = scan(**args, initial_states=initial, return_final_states=True)  # (b, l, H, P)
        if state is not None:  # rebind (never write in place: the old state may be saved for backward)
            for name, value in zip(STATE_NAMES, final):
                state[name] = value.detach().to(state[name].dtype, copy=True)
        return self._out(y, z, hidden.dtype)

    def forward(self, hidden: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix along the sequence: ``hidden (b, l, d_model) -> (b, l, d_model)``, same dtype.

        With a ``cache``, the sequence continues from the cached states (zeros at
        ``seqlen_offset == 0``: the prefill), whatever ``l``, by :func:`mamba3_chunked`; this
        layer's four states are replaced by the final ones (the model advances ``seqlen_offset``).
        ``attention_mask (b, l)`` bool, False on each row's left padding: padded steps get
        ``dt = 0`` and ``x = 0`` (no decay, no rotation, no input, and a zero "previous token"
        for the first real one), so a left-padded prefill equals the unpadded one.
        """
        return self._mix(hidden, cache, attention_mask,
                         lambda **kw: mamba3_chunked(**kw, chunk_size=self.config.chunk_size))

    def step(self, hidden_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step in constant time: ``hidden_t (b, 1, d_model) -> (b, 1, d_model)``.

        One step of the recurrence (:func:`mamba3_sequential` with ``l = 1``) from the cached
        angles, state and previous token; the same function as :meth:`forward`. The official
        counterpart is ``Mamba3.step`` (a CuTe kernel; mamba_ssm commit e9594ce).
        """
        return self._mix(hidden_t, cache, None, mamba3_sequential)
