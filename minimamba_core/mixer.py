"""The Mamba mixer: the selective SSM wrapped in projections, a causal convolution and a gate.

Paper Figure 3 (right) and Algorithm 2, Gu & Dao 2023; the official counterpart is
``Mamba`` in ``mamba_ssm/modules/mamba_simple.py`` (state-spaces/mamba, commit 0cce0fa), whose
parameter names we keep so checkpoints load by name::

    x, z      = in_proj(hidden).chunk(2)            (b, l, d_inner) each
    x         = silu(causal depthwise conv1d(x))    width d_conv
    dt, B, C  = x_proj(x).split(R, N, N)            (b, l, R), (b, l, N), (b, l, N)
    delta     = softplus(dt_proj(dt))               (b, l, d_inner), bias inside the softplus
    A         = -exp(A_log)                         (d_inner, N)
    y         = selective_scan(x, delta, A, B, C, D, z)   (scan.py, gated by silu(z))
    out       = out_proj(y)                         (b, l, d_model)

Differences from the official module: no fused CUDA kernels; the convolution is computed in
float32 in both the full and the step path so that the two agree bit for bit in their inputs;
``forward`` accepts a cache at any ``seqlen_offset`` (a continuation, not only a prefill), and
an ``attention_mask`` for left-padded batches. In a half-precision model the convolution, the
scan and the states stay float32, also under ``torch.autocast``, and ``A_log`` and ``D`` stay
float32 parameters (docs/numerics.md measures why). Built in notebook ``05_mamba_block``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .checks import check_batch_size, check_state_dtype
from .config import MambaConfig
from .scan import selective_scan_parallel, selective_scan_sequential

_HALF = (torch.float16, torch.bfloat16)


def autocast_off(device_type: str):
    """A region where ``torch.autocast`` does not lower conv/einsum to bf16/fp16 (CPU and CUDA)."""
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def skip_left_padding(x_t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Move each row's left padding in front of its cached inputs, as zeros.

    ``x_t (b, d_inner, k + l)`` holds the ``k`` cached pre-convolution inputs then the ``l`` new
    ones; ``keep (b, l)`` bool is False on the ``p_b`` padded steps at the start of row ``b``.
    Returns ``[0 * p_b, cached, real inputs]`` per row, so the convolution sees the real inputs
    right after the cached ones, exactly as if the padding had not been there.
    """
    k = x_t.shape[2] - keep.shape[1]
    p = (~keep).sum(dim=1, keepdim=True)  # (b, 1) padded steps per row
    j = torch.arange(x_t.shape[2], device=x_t.device)[None]  # (1, k + l)
    src = torch.where(j < p, j + k, torch.where(j < k + p, j - p, j))  # (b, k + l)
    moved = x_t.gather(2, src[:, None, :].expand(-1, x_t.shape[1], -1))  # (b, d_inner, k + l)
    return moved.masked_fill((j < p)[:, None, :], 0.0)  # the padded inputs become zeros


def causal_conv(x: torch.Tensor, conv1d: nn.Conv1d, conv_state: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The causal depthwise convolution and its SiLU over a whole sequence, continuing a cache.

    Args:
        x: ``(b, l, d)``, the convolution's input (Mamba-1: ``x``; Mamba-2: ``x, B, C`` together).
        conv1d: the depthwise ``nn.Conv1d(d, d, k, groups=d)``; only its weight and bias are used.
        conv_state: ``(b, d, k)``, the ``k`` inputs before this sequence (zeros, the
            convolution's own padding, when ``None``).
        attention_mask: ``(b, l)`` bool, False on each row's left padding (see
            :func:`skip_left_padding`).

    Returns:
        ``silu(conv(x)) (b, l, d)`` and the new ``conv_state (b, d, k)``, both float32 (float64
        for float64 input): the full and the step path convolve in the same precision.
    """
    k = conv1d.weight.shape[-1]
    acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64
    x_t = x.transpose(1, 2).to(acc)  # (b, d, l)
    prev = conv_state.to(acc) if conv_state is not None else x_t.new_zeros(x_t.shape[0], x_t.shape[1], k)
    x_t = torch.cat([prev, x_t], dim=-1)  # (b, d, k+l)
    if attention_mask is not None:
        x_t = skip_left_padding(x_t, attention_mask)  # (b, d, k+l)
    weight = conv1d.weight.to(acc)  # (d, 1, k)
    bias = conv1d.bias.to(acc) if conv1d.bias is not None else None
    x_conv = F.conv1d(x_t[:, :, 1:], weight, bias, groups=weight.shape[0])  # (b, d, l)
    # clone: the last k inputs alone, not a view that keeps the whole (b, d, k+l) buffer alive
    return F.silu(x_conv).transpose(1, 2), x_t[:, :, -k:].clone()  # (b, l, d), (b, d, k)


def causal_conv_step(x_t: torch.Tensor, conv1d: nn.Conv1d, conv_state: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of :func:`causal_conv`: ``x_t (b, 1, d)`` shifted into ``conv_state (b, d, k)``.

    Returns ``silu(conv) (b, 1, d)`` and the new ``conv_state``, both in ``conv_state``'s dtype;
    the convolution is a dot product over the ``k`` entries (constant time).
    """
    conv_state = torch.cat([conv_state[:, :, 1:], x_t.transpose(1, 2).to(conv_state.dtype)], dim=-1)  # (b, d, k)
    x_conv = torch.einsum("bdk,dk->bd", conv_state, conv1d.weight[:, 0].to(conv_state.dtype))  # (b, d)
    if conv1d.bias is not None:
        x_conv = x_conv + conv1d.bias.to(conv_state.dtype)  # (b, d)
    return F.silu(x_conv)[:, None], conv_state  # (b, 1, d), (b, d, k)


class SSMMixer(nn.Module):
    """What every SSM mixer shares: its precision rules and its cache entry.

    A subclass sets ``FLOAT32_PARAMS`` (the parameters that stay float32 in a half-precision
    model), has an ``in_proj`` (its dtype is the model's) and defines :meth:`state_shapes`.
    """

    FLOAT32_PARAMS: tuple[str, ...] = ()

    @torch.no_grad()
    def init_projections(self) -> None:
        """``in_proj``/``out_proj`` as the official ``_init_weights`` (mamba_ssm ``mixer_seq_simple.py``).

        Kaiming-uniform weights, zero biases, and ``out_proj.weight`` scaled by
        ``1/sqrt(n_residuals * n_layer)``: GPT-2's rescaling of residual branches, two per layer
        with a gated MLP.
        """
        cfg = self.config
        for linear in (self.in_proj, self.out_proj):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
            if linear.bias is not None:
                linear.bias.zero_()
        self.out_proj.weight /= math.sqrt((2 if cfg.d_intermediate > 0 else 1) * cfg.n_layer)

    def compute_dtype(self) -> torch.dtype:
        """The precision of the convolution, scan and states: float32, or float64 in a float64 mixer."""
        return torch.promote_types(self.in_proj.weight.dtype, torch.float32)

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        raise NotImplementedError

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """This layer's zero states, ``{name: tensor}`` with the shapes of :meth:`state_shapes`.

        The signature of ``allocate_inference_cache`` of the official mixers
        (``mamba_ssm/modules/mamba_simple.py``, state-spaces/mamba commit 0cce0fa, and
        ``mamba2.py``, commit 60dadf2), which return the same tensors as a tuple; a dict names them for the model's
        :class:`InferenceCache`. ``max_seqlen`` is accepted and unused: an SSM layer's states do
        not grow with the sequence. ``dtype`` defaults to :meth:`compute_dtype` (the official
        modules take the weights' dtype, bf16 included; we keep half-precision models' states in
        float32). The states live on the mixer's device.

        Raises:
            ValueError: ``batch_size < 1``; a dtype other than float32/float64.
        """
        check_batch_size(batch_size)
        dtype = self.compute_dtype() if dtype is None else dtype
        check_state_dtype(dtype)
        device = self.in_proj.weight.device
        return {name: torch.zeros(shape, device=device, dtype=dtype)
                for name, shape in self.state_shapes(batch_size).items()}

    def _apply(self, fn, *args, **kwargs):
        """``.to(torch.bfloat16)``, ``.half()``... cast every parameter but ``FLOAT32_PARAMS``.

        Those stay float32 in a half-precision model, as the official modules keep ``A_log``
        ("Keep A_log in fp32", ``Mamba.__init__``, state-spaces/mamba commit 0cce0fa); their
        values are kept exactly, not rounded through the half dtype (half values, as a
        checkpoint may store them, become float32; float64 stays float64). float64 casts apply
        to all. ``load_pretrained`` converts a loaded model through this too.
        """
        kept = {name: getattr(self, name).detach() for name in self.FLOAT32_PARAMS}
        super()._apply(fn, *args, **kwargs)
        for name, old in kept.items():
            param = getattr(self, name)
            if param.dtype in _HALF:
                keep = torch.float32 if old.dtype in _HALF else old.dtype
                param.data = old.to(device=param.device, dtype=keep)
                if param.grad is not None:
                    param.grad = param.grad.to(keep)
        return self


class MambaMixer(SSMMixer):
    """One Mamba mixer (the block's sequence-mixing part), official initialization.

    Args:
        config: the model's :class:`MambaConfig`.
        layer_idx: this mixer's index, used to find its states in an :class:`InferenceCache`.

    Parameters (official names): ``in_proj (2*d_inner, d_model)``,
    ``conv1d.weight (d_inner, 1, d_conv)``, ``x_proj (dt_rank + 2*d_state, d_inner)``,
    ``dt_proj (d_inner, dt_rank)`` with bias, ``A_log (d_inner, d_state)``, ``D (d_inner,)``,
    ``out_proj (d_model, d_inner)``. ``A_log`` and ``D`` stay float32 in a half-precision model.
    """

    FLOAT32_PARAMS = ("A_log", "D")

    def __init__(self, config: MambaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d_model, d_inner, n, R, k = (config.d_model, config.d_inner, config.d_state,
                                     config.dt_rank, config.d_conv)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=config.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=k, groups=d_inner, padding=k - 1,
                                bias=config.conv_bias)
        self.x_proj = nn.Linear(d_inner, R + 2 * n, bias=False)
        self.dt_proj = nn.Linear(R, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, n))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=config.bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialization (``Mamba.__init__`` and ``_init_weights`` of mamba_ssm).

        * ``dt_proj.weight`` uniform in ``+-dt_rank**-0.5 * dt_scale`` (or that constant);
        * ``dt_proj.bias = softplus^-1(dt)``, ``dt`` log-uniform in ``[dt_min, dt_max]``,
          clamped below at ``dt_init_floor``, so that the initial delta is ``dt``;
        * ``A_log[d] = log(1, 2, ..., N)`` (S4D-Real, so ``A = -(1..N)``); ``D = 1``;
        * ``in_proj``/``out_proj`` biases zero; ``out_proj.weight`` scaled by ``1/sqrt(n_residuals * n_layer)``
          (two residual branches per layer with a gated MLP, as the official ``_init_weights``)
          (GPT-2's rescaling of residual branches). Other weights keep PyTorch's defaults.
        """
        cfg = self.config
        std = cfg.dt_rank ** -0.5 * cfg.dt_scale
        if cfg.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_min, log_max = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(cfg.d_inner) * (log_max - log_min) + log_min)  # (d_inner,)
        dt = dt.clamp(min=cfg.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        A = torch.arange(1, cfg.d_state + 1, dtype=torch.float32)  # (n,)
        self.A_log.copy_(torch.log(A).expand(cfg.d_inner, -1))  # (d_inner, n)
        self.D.fill_(1.0)
        self.init_projections()

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        """The shapes of this layer's states: ``conv_state (b, d_inner, d_conv)``, ``ssm_state (b, d_inner, d_state)``."""
        d, k, n = self.config.d_inner, self.config.d_conv, self.config.d_state
        return {"conv_state": (batch_size, d, k), "ssm_state": (batch_size, d, n)}

    def ssm_inputs(self, x: torch.Tensor):
        """``x (b, l, d_inner)`` -> ``delta`` before bias/softplus ``(b, l, d_inner)``, ``B, C (b, l, N)``.

        A public hook: the LTI ablation (``training/tasks.py``, ``LTIMixer``) overrides it to make
        ``delta, B, C`` independent of the input."""
        R, n = self.config.dt_rank, self.config.d_state
        dt, B, C = self.x_proj(x).split([R, n, n], dim=-1)  # (b, l, R), (b, l, n), (b, l, n)
        delta = F.linear(dt, self.dt_proj.weight)  # (b, l, d_inner); bias added in the scan
        return delta, B, C

    def scan_params(self):
        """``A (d_inner, N)``, ``D (d_inner,)`` and the delta bias in float32 (float64 if stored so).

        A public hook, like :meth:`ssm_inputs`, for a mixer that derives ``A``, ``D`` or the bias
        otherwise (the LTI ablation of ``training/tasks.py`` keeps this one)."""
        acc = torch.promote_types(self.A_log.dtype, torch.float32)
        return -torch.exp(self.A_log.to(acc)), self.D.to(acc), self.dt_proj.bias.to(acc)

    def forward(self, hidden: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix along the sequence: ``hidden (b, l, d_model) -> (b, l, d_model)``, same dtype.

        With a ``cache``, the sequence continues from the cached states (zeros at
        ``seqlen_offset == 0``: the prefill), and this layer's states are replaced by the
        final ones. The caller (the model) advances ``cache.seqlen_offset``.

        ``attention_mask (b, l)`` bool (validated by the model), False on each row's left
        padding: padded steps are skipped. Their pre-convolution inputs become zeros placed
        before the cached ones (at the prefill: the convolution's own zero padding) and their
        ``delta`` is 0, so ``A_bar = 1``, ``B_bar = 0`` and the state passes through unchanged.
        Outputs at padded positions are meaningless.
        """
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d_inner) each
        acc = torch.promote_types(hidden.dtype, torch.float32)  # float32, or float64
        state = cache.layers[self.layer_idx] if cache is not None else None
        with autocast_off(hidden.device.type):  # autocast would run the conv and scan in bf16
            x, conv_state = causal_conv(x, self.conv1d, state["conv_state"] if state else None,
                                        attention_mask)  # (b, l, d_inner) float32, (b, d_inner, k)
            x = x.to(hidden.dtype)  # (b, l, d_inner)
            delta, B, C = self.ssm_inputs(x)
            A, D, delta_bias = self.scan_params()
            if attention_mask is not None:  # delta = 0 on padded steps: A_bar = 1, B_bar = 0
                delta = F.softplus(delta.to(acc) + delta_bias)  # (b, l, d_inner), as in the scan
                delta = delta.masked_fill(~attention_mask[:, :, None], 0.0)
                delta_bias = None
            h0 = state["ssm_state"] if state else None
            y, h = selective_scan_parallel(x, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                           delta_softplus=attention_mask is None, h0=h0,
                                           return_last_state=True)
        if state is not None:  # rebind (never write in place: h0 may be saved for backward)
            state["conv_state"] = conv_state.detach().to(state["conv_state"].dtype)
            state["ssm_state"] = h.detach().to(state["ssm_state"].dtype, copy=True)  # no view of scan buffers
        return self.out_proj(y)  # (b, l, d_model)

    def step(self, hidden_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step in constant time: ``hidden_t (b, 1, d_model) -> (b, 1, d_model)``.

        Shifts the new input into ``conv_state``, applies the convolution as a dot product over
        its ``d_conv`` entries, and advances ``ssm_state`` by one step of the recurrence (the
        sequential scan with ``l = 1``). Computes the same function as :meth:`forward`.
        """
        x, z = self.in_proj(hidden_t).chunk(2, dim=-1)  # (b, 1, d_inner) each
        state = cache.layers[self.layer_idx]
        with autocast_off(hidden_t.device.type):  # float32 conv and scan under autocast too
            x, conv_state = causal_conv_step(x, self.conv1d, state["conv_state"])  # (b, 1, d_inner), (b, d_inner, k)
            x = x.to(hidden_t.dtype)  # (b, 1, d_inner)
            delta, B, C = self.ssm_inputs(x)
            A, D, delta_bias = self.scan_params()
            y, h = selective_scan_sequential(x, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                             delta_softplus=True, h0=state["ssm_state"],
                                             return_last_state=True)
        state["conv_state"] = conv_state.detach()
        state["ssm_state"] = h.detach().to(state["ssm_state"].dtype)
        return self.out_proj(y)  # (b, 1, d_model)
