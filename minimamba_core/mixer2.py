"""The Mamba-2 mixer: SSD wrapped in one input projection, a causal convolution and a gated norm.

Dao & Gu 2024 (arXiv 2405.21060), Section 7 (the Mamba-2 block); the official
counterpart is ``Mamba2`` in ``mamba_ssm/modules/mamba2.py`` (state-spaces/mamba, commit 60dadf2),
whose parameter names and initialization we keep, so checkpoints load by name::

    z, xBC, dt = in_proj(hidden).split(d_inner, d_inner + 2 G N, H)    one projection, in parallel
    xBC        = silu(causal depthwise conv1d(xBC))                   x, B and C convolved together
    x, B, C    = xBC.split(d_inner, G N, G N)                          (b, l, H, P), (b, l, G, N) x 2
    A          = -exp(A_log)                                           (H,): one scalar per head
    y          = ssd(x, dt, A, B, C, D, dt_bias, softplus, dt_limit)   (ssd.py)
    y          = norm(y, z)             = rmsnorm_per_group(y * silu(z)) * weight
    out        = out_proj(y)                                           (b, l, d_model)

with ``H = nheads = d_inner / headdim`` heads of ``P = headdim`` channels, ``G = ngroups`` groups
of heads sharing ``B`` and ``C``, ``N = d_state``. Compared with Mamba-1 (``mixer.py``): ``dt, B, C``
come from the block's input through ``in_proj`` (not from the convolved ``x`` through ``x_proj``
and ``dt_proj``), ``A`` and ``dt`` are one number per head, and the gate goes into a norm.

Differences from the official module: no fused kernels; ``d_ssm < d_inner`` (a gated MLP beside
the SSM) is not supported (the released models do not use it); ``forward`` continues a cache of
any ``seqlen_offset`` by the chunked algorithm (a multi-token continuation is never treated as
one step: transformers issue #46032, fixed by PR #46084), and takes an ``attention_mask`` for
left-padded batches as Mamba-1 does; ``step`` applies ``dt_limit`` as ``forward`` does. Precision
as Mamba-1: convolution, scan and states float32 (float64 in a float64 model), ``A_log``, ``D``
and ``dt_bias`` float32 parameters in a half-precision model. Built in notebook ``13_mamba2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .config import MambaConfig
from .mixer import SSMMixer, autocast_off, causal_conv, causal_conv_step
from .norm import RMSNormGated
from .ssd import NO_LIMIT, ssd_chunked, ssd_sequential


class Mamba2Mixer(SSMMixer):
    """One Mamba-2 mixer, official names and initialization.

    Args:
        config: the model's :class:`MambaConfig` with ``ssm_cfg["layer"] == "Mamba2"``.
        layer_idx: this mixer's index, used to find its states in an :class:`InferenceCache`.

    Parameters (official names), with ``H = nheads``, ``G = ngroups``, ``N = d_state``:
    ``in_proj (2 d_inner + 2 G N + H, d_model)``, ``conv1d.weight (d_inner + 2 G N, 1, d_conv)``,
    ``dt_bias (H,)``, ``A_log (H,)``, ``D (H,)`` (``(d_inner,)`` with ``D_has_hdim``),
    ``norm.weight (d_inner,)`` (with ``rmsnorm``), ``out_proj (d_model, d_inner)``.

    The official counterpart is ``Mamba2`` in ``mamba_ssm/modules/mamba2.py`` (state-spaces/mamba
    commit 60dadf2); the paper's Section 7 (arXiv 2405.21060). Calls: ``forward(hidden,
    cache=None, attention_mask=None)`` ``(b, l, d_model) -> (b, l, d_model)``, ``step(hidden_t,
    cache)`` ``(b, 1, d_model) -> (b, 1, d_model)``, the states of :meth:`state_shapes`.

    Raises:
        ValueError: a config whose heads or groups do not fit (raised by :class:`MambaConfig`).
    """

    FLOAT32_PARAMS = ("A_log", "D", "dt_bias")

    def __init__(self, config: MambaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d_inner, G, N, H = config.d_inner, config.ngroups, config.d_state, config.nheads
        assert H * config.headdim == d_inner and H % G == 0, "MambaConfig checks heads and groups"
        self.conv_dim = d_inner + 2 * G * N  # x, B and C are convolved together
        self.in_proj = nn.Linear(config.d_model, d_inner + self.conv_dim + H, bias=config.bias)  # z, xBC, dt
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=config.d_conv, groups=self.conv_dim,
                                padding=config.d_conv - 1, bias=config.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(d_inner if config.D_has_hdim else H))
        if config.rmsnorm:
            self.norm = RMSNormGated(d_inner, eps=config.rms_norm_eps, norm_before_gate=config.norm_before_gate,
                                     group_size=d_inner // G)
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=config.bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialization (``Mamba2.__init__`` and ``_init_weights`` of mamba_ssm).

        * ``dt_bias = softplus^-1(dt)``, ``dt`` log-uniform in ``[dt_min, dt_max]``, clamped below
          at ``dt_init_floor``, so that the initial step size of head ``h`` is ``dt``;
        * ``A_log = log(A)``, ``A`` uniform in ``A_init_range`` (default ``[1, 16]``), one per head;
        * ``D = 1``; the norm's weight 1;
        * ``in_proj``/``out_proj`` biases zero; ``out_proj.weight`` scaled by
          ``1/sqrt(n_residuals * n_layer)`` (GPT-2's rescaling; two residuals per layer with a
          gated MLP). Other weights keep PyTorch's defaults.
        """
        cfg = self.config
        H = cfg.nheads
        log_min, log_max = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(H) * (log_max - log_min) + log_min).clamp(min=cfg.dt_init_floor)  # (H,)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        A = torch.empty(H).uniform_(*cfg.A_init_range)  # (H,)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)
        if cfg.rmsnorm:
            self.norm.weight.fill_(1.0)
        self.init_projections()

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        """``conv_state (b, d_inner + 2 ngroups d_state, d_conv)``, ``ssm_state (b, nheads, headdim, d_state)``."""
        cfg = self.config
        return {"conv_state": (batch_size, self.conv_dim, cfg.d_conv),
                "ssm_state": (batch_size, cfg.nheads, cfg.headdim, cfg.d_state)}

    def _split(self, hidden: torch.Tensor):
        """``in_proj`` and its split: ``z (b, l, d_inner)``, ``xBC (b, l, conv_dim)``, ``dt (b, l, H)``."""
        d_inner, H = self.config.d_inner, self.config.nheads
        return self.in_proj(hidden).split([d_inner, self.conv_dim, H], dim=-1)

    def _ssd_args(self, xBC: torch.Tensor, z: torch.Tensor):
        """The convolved ``xBC`` cut into SSD's layout, and the per-head parameters in float32."""
        cfg = self.config
        b, l, _ = xBC.shape
        x, B, C = xBC.split([cfg.d_inner, cfg.ngroups * cfg.d_state, cfg.ngroups * cfg.d_state], dim=-1)
        x = x.unflatten(-1, (cfg.nheads, cfg.headdim))  # (b, l, H, P)
        B = B.unflatten(-1, (cfg.ngroups, cfg.d_state))  # (b, l, G, N)
        C = C.unflatten(-1, (cfg.ngroups, cfg.d_state))  # (b, l, G, N)
        acc = torch.promote_types(self.A_log.dtype, torch.float32)
        A = -torch.exp(self.A_log.to(acc))  # (H,), exp in float32 (never in half precision)
        D = self.D.to(acc)
        D = D.unflatten(0, (cfg.nheads, cfg.headdim)) if cfg.D_has_hdim else D  # (H, P) or (H,)
        gate = None if cfg.rmsnorm else z.unflatten(-1, (cfg.nheads, cfg.headdim))  # (b, l, H, P)
        return x, A, B, C, D, gate

    def _out(self, y: torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``y (b, l, H, P)`` -> gated norm -> ``out_proj`` -> ``(b, l, d_model)`` in ``dtype``."""
        y = y.flatten(-2)  # (b, l, d_inner)
        if self.config.rmsnorm:
            y = self.norm(y, z)  # (b, l, d_inner): rmsnorm_per_group(y * silu(z)) * weight
        return self.out_proj(y.to(dtype))  # (b, l, d_model)

    def forward(self, hidden: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix along the sequence: ``hidden (b, l, d_model) -> (b, l, d_model)``, same dtype.

        With a ``cache``, the sequence continues from the cached states (zeros at
        ``seqlen_offset == 0``: the prefill), whatever ``l``, by the chunked algorithm with the
        cached state as ``initial_states``; this layer's states are replaced by the final ones.
        The caller (the model) advances ``cache.seqlen_offset``.

        ``attention_mask (b, l)`` bool (validated by the model), False on each row's left
        padding: padded steps are skipped, as in :meth:`MambaMixer.forward` (their convolution
        inputs move in front of the cached ones as zeros, their ``dt`` is 0, so the state passes
        through unchanged). Outputs at padded positions are meaningless.
        """
        cfg = self.config
        z, xBC, dt = self._split(hidden)  # (b, l, d_inner), (b, l, conv_dim), (b, l, H)
        state = cache.layers[self.layer_idx] if cache is not None else None
        with autocast_off(hidden.device.type):  # autocast would run the conv and scan in bf16
            xBC, conv_state = causal_conv(xBC, self.conv1d, state["conv_state"] if state else None,
                                          attention_mask)  # (b, l, conv_dim) float32, (b, conv_dim, k)
            x, A, B, C, D, gate = self._ssd_args(xBC, z)
            dt_bias, dt_limit = self.dt_bias, cfg.dt_limit
            if attention_mask is not None:  # dt = 0 on padded steps: exp(dt A) = 1, no input
                dt = F.softplus(dt.to(x.dtype) + dt_bias.to(x.dtype))  # (b, l, H), as in ssd
                if tuple(dt_limit) != NO_LIMIT:
                    dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
                dt = dt.masked_fill(~attention_mask[:, :, None], 0.0)
                dt_bias, dt_limit = None, NO_LIMIT
            y, h = ssd_chunked(x, dt, A, B, C, cfg.chunk_size, D=D, z=gate, dt_bias=dt_bias,
                               dt_softplus=attention_mask is None, dt_limit=dt_limit,
                               initial_states=state["ssm_state"] if state else None,
                               return_final_states=True)  # (b, l, H, P), (b, H, P, N)
        if state is not None:  # rebind (never write in place: the old state may be saved for backward)
            state["conv_state"] = conv_state.detach().to(state["conv_state"].dtype)
            # a copy: h is a view of the (b, chunks + 1, H, P, N) tensor of entering states
            state["ssm_state"] = h.detach().to(state["ssm_state"].dtype, copy=True)
        return self._out(y, z, hidden.dtype)

    def step(self, hidden_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step in constant time: ``hidden_t (b, 1, d_model) -> (b, 1, d_model)``.

        Shifts the new ``xBC`` into ``conv_state``, convolves by a dot product, and advances
        ``ssm_state`` by one step of the recurrence (:func:`ssd_sequential` with ``l = 1``).
        Computes the same function as :meth:`forward`; ``Mamba2.step`` of mamba_ssm (commit
        60dadf2) is the official counterpart.
        """
        cfg = self.config
        z, xBC, dt = self._split(hidden_t)  # (b, 1, d_inner), (b, 1, conv_dim), (b, 1, H)
        state = cache.layers[self.layer_idx]
        with autocast_off(hidden_t.device.type):
            xBC, conv_state = causal_conv_step(xBC, self.conv1d, state["conv_state"])  # (b, 1, conv_dim)
            x, A, B, C, D, gate = self._ssd_args(xBC, z)
            y, h = ssd_sequential(x, dt, A, B, C, D=D, z=gate, dt_bias=self.dt_bias, dt_softplus=True,
                                  dt_limit=cfg.dt_limit, initial_states=state["ssm_state"],
                                  return_final_states=True)  # (b, 1, H, P), (b, H, P, N)
        state["conv_state"] = conv_state.detach()
        state["ssm_state"] = h.detach().to(state["ssm_state"].dtype)
        return self._out(y, z, hidden_t.dtype)
