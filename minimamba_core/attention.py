"""Causal multi-head attention as one more mixer kind: the Transformer's layer in Mamba's shell.

Vaswani et al. 2017, eq. (1), made causal as in GPT: for each head, with the queries, keys and
values of the positions ``t`` (query) and ``s`` (key) of one sequence,

    score[t, s] = q_t . k_s * softmax_scale           softmax_scale = 1 / sqrt(head_dim) by default
    score[t, s] = -inf  where s > t                    the causal mask: no look at the future
    y_t         = sum_s softmax_s(score[t, :]) v_s     a weighted mean of the past values

Layers at the indices of ``config.attn_layer_idx`` are built from this file (registered under
``"MHA"`` in ``model.py``); the model around them (norms, residuals, the gated MLP of
``d_intermediate > 0``, the cache, ``generate``) is the same as for the SSM mixers, so a
Transformer, a Mamba and a hybrid differ only in their config. Official counterpart: ``MHA`` in
``mamba_ssm/modules/mha.py`` (state-spaces/mamba, commit 60dadf2), whose keyword arguments are
``config.attn_cfg``'s keys and whose parameter names we keep (``in_proj`` producing ``q, k, v``
in that order, ``out_proj``), so a hybrid's attention weights load by name.

Positions, two ways (the Mamba paper's MHA-RoPE and MHA-Abs rows, Gu & Dao 2023, Table 2):

* rotary (Su et al. 2021, RoFormer, Section 3.4.2): each pair of channels ``(x_a, x_b)`` of ``q`` and
  ``k`` is rotated by the angle ``pos * base**(-2i / rotary_emb_dim)``, so that ``q_t . k_s``
  depends on ``t - s`` only. The pairs are ``(i, i + r/2)`` ("rotate half", GPT-NeoX) or
  ``(2i, 2i + 1)`` with ``rotary_emb_interleaved`` (GPT-J); channels beyond ``rotary_emb_dim``
  are not rotated. The convention of flash-attn's ``RotaryEmbedding``, which the official MHA uses.
* learned absolute (``max_position_embeddings > 0``, a MiniMamba extension of ``attn_cfg``): a
  table ``pos_emb (max_position_embeddings, d_model)`` whose row ``pos`` is added to this layer's
  input before ``in_proj``. GPT-2 adds such a table once to the residual stream; here each
  attention layer owns one, so the SSM layers of a hybrid stay free of positions.

A position is the number of real tokens before it in its row: left padding (``attention_mask``)
does not count, and padded keys are masked, so each row gets what it gets alone.

The cache: keys and values ``(b, t, num_heads_kv, head_dim)`` and ``key_mask (b, t)`` (False on
padding) that grow by one entry per token, unlike an SSM's fixed-size state. Only the first
``cache.seqlen_offset`` entries are read, so :meth:`InferenceCache.reset` (which zeroes in place)
leaves no stale key behind: the next prefill replaces them.

Differences from the official module: no flash-attn kernels (torch's
``F.scaled_dot_product_attention``); ``mlp_dim`` and ``d_conv`` must be 0; the layer is always
causal (the official default ``causal=False`` would let a language model read the future);
the cache grows by concatenation instead of a preallocated ``max_seqlen`` buffer; left padding
and absolute positions are ours. Precision as the SSM mixers: the projections run in the model's
dtype, rotary, softmax and the cache in float32 (float64 in a float64 model).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .checks import check_batch_size, check_state_dtype
from .config import MambaConfig
from .mixer import autocast_off

# attn_cfg defaults: the official MHA's signature (commit 60dadf2), causal always, no absolute table
ATTN_DEFAULTS = {"num_heads_kv": None, "head_dim": None, "qkv_proj_bias": True, "out_proj_bias": True,
                 "softmax_scale": None, "rotary_emb_dim": 0, "rotary_emb_base": 10000.0,
                 "rotary_emb_interleaved": False, "max_position_embeddings": 0}


def rotary(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, base: float = 10000.0,
           interleaved: bool = False) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` channels of every head by position (RoPE, RoFormer Section 3.4.2).

    Args:
        x: ``(b, l, heads, head_dim)`` queries or keys, float32/float64.
        positions: ``(b, l)`` integer positions.
        rotary_dim: ``r``, even, ``<= head_dim``; 0 returns ``x``.
        base: the frequency base; pair ``i`` turns by ``pos * base**(-2i / r)``.
        interleaved: pairs ``(2i, 2i+1)`` instead of ``(i, i + r/2)``.

    Returns:
        ``(b, l, heads, head_dim)`` in ``x``'s dtype.
    """
    if rotary_dim == 0:
        return x
    r = rotary_dim
    inv_freq = base ** (-torch.arange(0, r, 2, device=x.device, dtype=x.dtype) / r)  # (r/2,)
    angle = positions.to(x.dtype)[:, :, None, None] * inv_freq  # (b, l, 1, r/2)
    cos, sin = angle.cos(), angle.sin()
    x_rot, x_pass = x[..., :r], x[..., r:]
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]  # (b, l, h, r/2) each: the pairs (2i, 2i+1)
    else:
        x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2:]  # the pairs (i, i + r/2)
    y1, y2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin  # a 2-d rotation of every pair
    y_rot = torch.stack([y1, y2], dim=-1).flatten(-2) if interleaved else torch.cat([y1, y2], dim=-1)
    return torch.cat([y_rot, x_pass], dim=-1)  # (b, l, h, head_dim)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
                        key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal softmax attention written out: the reference the fast path is tested against.

    The queries are the last ``lq`` of the ``lk`` positions (``lq == lk`` without a cache). Query
    head ``h`` reads key/value head ``h // (heads / heads_kv)`` (grouped-query attention; one kv
    head is multi-query attention).

    Args:
        q: ``(b, lq, heads, head_dim)``; k, v: ``(b, lk, heads_kv, head_dim)``, ``lk >= lq``.
        softmax_scale: default ``head_dim ** -0.5``.
        key_mask: ``(b, lk)`` bool, False on padding keys (a query still sees itself, so a padded
            query has one key and a finite output).

    Returns:
        ``(b, lq, heads, head_dim)``, the dtype of ``q``.
    """
    b, lq, H, hd = q.shape
    lk, Hkv = k.shape[1], k.shape[2]
    scale = hd ** -0.5 if softmax_scale is None else softmax_scale
    group = torch.arange(H, device=q.device) // (H // Hkv)  # (H,) the kv head of each query head
    k, v = k[:, :, group], v[:, :, group]  # (b, lk, H, hd)
    score = torch.einsum("bthd,bshd->bhts", q, k) * scale  # (b, H, lq, lk)
    allowed = attention_mask_matrix(lq, lk, key_mask, q.device, b)  # (b, lq, lk)
    score = score.masked_fill(~allowed[:, None], float("-inf"))
    weight = torch.exp(score - score.amax(dim=-1, keepdim=True))  # exp(-inf) = 0 above the diagonal
    weight = weight / weight.sum(dim=-1, keepdim=True)  # (b, H, lq, lk), each row sums to 1
    return torch.einsum("bhts,bshd->bthd", weight, v)  # (b, lq, H, hd)


def attention_mask_matrix(lq: int, lk: int, key_mask: torch.Tensor | None, device: torch.device,
                          batch_size: int) -> torch.Tensor:
    """Which key each query may read: ``(b, lq, lk)`` bool, True where allowed.

    Query ``t`` (at position ``lk - lq + t``) reads key ``s`` when ``s <= lk - lq + t`` (causal)
    and the key is real (``key_mask``); it always reads itself, so that a padded query has one
    key (its output is meaningless but finite: no NaN reaches the residual stream).
    """
    t = torch.arange(lq, device=device)[:, None] + (lk - lq)  # (lq, 1) positions of the queries
    s = torch.arange(lk, device=device)[None, :]  # (1, lk)
    allowed = (s <= t)[None].expand(batch_size, lq, lk)  # (b, lq, lk)
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, :] | (s == t)[None])
    return allowed


class AttentionMixer(nn.Module):
    """Causal multi-head attention with the mixer protocol of ``model.py``, official names.

    Args:
        config: the model's :class:`MambaConfig`; this layer reads ``d_model``, ``n_layer``,
            ``d_intermediate`` and ``attn_cfg`` (keys and defaults: ``num_heads`` required;
            ``num_heads_kv = num_heads``; ``head_dim = d_model // num_heads``; ``qkv_proj_bias``
            and ``out_proj_bias`` true; ``softmax_scale = head_dim**-0.5``; ``rotary_emb_dim`` 0,
            ``rotary_emb_base`` 10000, ``rotary_emb_interleaved`` false; ``max_position_embeddings``
            0, none).
        layer_idx: this mixer's index, to find its states in an :class:`InferenceCache`.

    Parameters: ``in_proj ((num_heads + 2 num_heads_kv) head_dim, d_model)`` (``q``, then all
    keys, then all values), ``out_proj (d_model, num_heads head_dim)``, and with
    ``max_position_embeddings`` ``pos_emb (max_position_embeddings, d_model)``.

    Raises:
        ValueError: no ``num_heads`` in ``attn_cfg`` (other bad values are refused by the config).
    """

    def __init__(self, config: MambaConfig, layer_idx: int = 0) -> None:
        super().__init__()
        cfg = {**ATTN_DEFAULTS, **config.attn_cfg}
        if "num_heads" not in cfg:
            raise ValueError(f"attention layer {layer_idx} needs attn_cfg['num_heads'] (the official MHA has no "
                             f"default), e.g. attn_cfg={{'num_heads': {max(1, config.d_model // 64)}}}")
        self.config, self.layer_idx = config, layer_idx
        self.num_heads = cfg["num_heads"]
        self.num_heads_kv = cfg["num_heads_kv"] or self.num_heads
        self.head_dim = cfg["head_dim"] or config.d_model // self.num_heads
        self.softmax_scale = cfg["softmax_scale"] or self.head_dim ** -0.5
        self.rotary_dim, self.rotary_base = cfg["rotary_emb_dim"], float(cfg["rotary_emb_base"])
        self.rotary_interleaved = cfg["rotary_emb_interleaved"]
        self.max_positions = cfg["max_position_embeddings"]
        qkv_dim = self.head_dim * (self.num_heads + 2 * self.num_heads_kv)
        self.in_proj = nn.Linear(config.d_model, qkv_dim, bias=cfg["qkv_proj_bias"])
        self.out_proj = nn.Linear(self.num_heads * self.head_dim, config.d_model, bias=cfg["out_proj_bias"])
        if self.max_positions > 0:
            self.pos_emb = nn.Embedding(self.max_positions, config.d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official ``_init_weights`` (``mixer_seq_simple.py``): kaiming-uniform projections, zero
        biases, ``out_proj.weight`` scaled by ``1/sqrt(n_residuals * n_layer)``; ``pos_emb`` normal(0, 0.02)."""
        for linear in (self.in_proj, self.out_proj):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
            if linear.bias is not None:
                linear.bias.zero_()
        self.out_proj.weight /= math.sqrt((2 if self.config.d_intermediate > 0 else 1) * self.config.n_layer)
        if self.max_positions > 0:
            nn.init.normal_(self.pos_emb.weight, std=0.02)

    def compute_dtype(self) -> torch.dtype:
        """The precision of rotary, softmax and the cache: float32, or float64 in a float64 mixer."""
        return torch.promote_types(self.in_proj.weight.dtype, torch.float32)

    def state_shapes(self, batch_size: int) -> dict[str, tuple]:
        """``key, value (b, None, num_heads_kv, head_dim)``, ``key_mask (b, None)``: ``None`` grows with the sequence."""
        kv = (batch_size, None, self.num_heads_kv, self.head_dim)
        return {"key": kv, "value": kv, "key_mask": (batch_size, None)}

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty states (no token yet): ``key, value (b, 0, num_heads_kv, head_dim)``, ``key_mask (b, 0)`` bool.

        ``max_seqlen`` is accepted and unused (the official MHA preallocates that many entries;
        ours grow). ``dtype`` defaults to :meth:`compute_dtype`.

        Raises:
            ValueError: ``batch_size < 1``; a dtype other than float32/float64.
        """
        check_batch_size(batch_size)
        dtype = self.compute_dtype() if dtype is None else dtype
        check_state_dtype(dtype)
        device = self.in_proj.weight.device
        kv = torch.zeros(batch_size, 0, self.num_heads_kv, self.head_dim, device=device, dtype=dtype)
        return {"key": kv, "value": kv.clone(), "key_mask": torch.zeros(batch_size, 0, dtype=torch.bool, device=device)}

    def forward(self, hidden: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the past: ``hidden (b, l, d_model) -> (b, l, d_model)``, same dtype.

        With a ``cache``, the first ``cache.seqlen_offset`` cached keys and values come before
        this input's (none at the prefill), and the layer's states become all of them. The
        caller (the model) advances ``cache.seqlen_offset``. ``attention_mask (b, l)`` bool
        (validated by the model), False on each row's left padding: padded keys are never read
        and padded steps do not count as positions; outputs at padded positions are meaningless.

        Raises:
            ValueError: a position beyond ``max_position_embeddings``; a cache holding fewer
            entries than ``seqlen_offset`` says.
        """
        b, l, _ = hidden.shape
        keep = attention_mask if attention_mask is not None else torch.ones(b, l, dtype=torch.bool,
                                                                            device=hidden.device)
        state = cache.layers[self.layer_idx] if cache is not None else None
        acc = self.compute_dtype()
        if state is not None:
            offset = cache.seqlen_offset
            if state["key"].shape[1] < offset:
                raise ValueError(f"attention layer {self.layer_idx}'s cache holds {state['key'].shape[1]} keys but "
                                 f"seqlen_offset is {offset}; the cache was changed by hand: allocate a new one")
            past_k, past_v = state["key"][:, :offset].to(acc), state["value"][:, :offset].to(acc)
            past_mask = state["key_mask"][:, :offset]  # (b, offset); later entries predate a reset
        else:
            past_k = past_v = None
            past_mask = keep.new_zeros(b, 0)
        positions = past_mask.sum(1, keepdim=True) + keep.cumsum(1) - 1  # (b, l) real tokens before each
        positions = positions.clamp(min=0)  # a row's left padding: position 0, never read
        x = hidden
        if self.max_positions > 0:
            if int(positions.max()) >= self.max_positions:
                raise ValueError(f"position {int(positions.max())} is beyond the absolute position table of "
                                 f"attention layer {self.layer_idx} (max_position_embeddings={self.max_positions}); "
                                 f"use shorter sequences or a larger table")
            x = hidden + self.pos_emb(positions).to(hidden.dtype)  # (b, l, d_model)
        H, Hkv, hd = self.num_heads, self.num_heads_kv, self.head_dim
        q, k, v = self.in_proj(x).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        with autocast_off(hidden.device.type):  # autocast would run the softmax in bf16
            q = rotary(q.unflatten(-1, (H, hd)).to(acc), positions, self.rotary_dim, self.rotary_base,
                       self.rotary_interleaved)  # (b, l, H, hd)
            k = rotary(k.unflatten(-1, (Hkv, hd)).to(acc), positions, self.rotary_dim, self.rotary_base,
                       self.rotary_interleaved)  # (b, l, Hkv, hd)
            v = v.unflatten(-1, (Hkv, hd)).to(acc)  # (b, l, Hkv, hd)
            if state is not None:
                k, v = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)  # (b, t, Hkv, hd)
            key_mask = torch.cat([past_mask, keep], dim=1)  # (b, t)
            y = self._attend(q, k, v, key_mask, plain=state is None and attention_mask is None)  # (b, l, H, hd)
        if state is not None:  # rebind, never write in place
            state["key"] = k.detach().to(state["key"].dtype)
            state["value"] = v.detach().to(state["value"].dtype)
            state["key_mask"] = key_mask
        return self.out_proj(y.flatten(-2).to(hidden.dtype))  # (b, l, d_model)

    def _attend(self, q, k, v, key_mask, plain: bool) -> torch.Tensor:
        """torch's fused attention, ``(b, lq, H, hd)`` from ``k, v (b, lk, Hkv, hd)``; the same function as
        :func:`attention_reference`. ``plain``: no cache, no padding, so the causal mask is the kernel's own."""
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, l, hd)
        if self.num_heads != self.num_heads_kv:  # query head h reads kv head h // group (torch >= 2.5
            group = self.num_heads // self.num_heads_kv  # has enable_gqa; we support torch 2.1)
            kt, vt = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1)  # (b, H, lk, hd)
        if plain:
            y = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=self.softmax_scale)
        else:
            allowed = attention_mask_matrix(q.shape[1], k.shape[1], key_mask, q.device, q.shape[0])  # (b, lq, lk)
            y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed[:, None], scale=self.softmax_scale)
        return y.transpose(1, 2)  # (b, lq, H, hd)

    def step(self, hidden_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step: ``hidden_t (b, 1, d_model) -> (b, 1, d_model)``; :meth:`forward` with ``l = 1``.

        Unlike an SSM's step its work grows with the tokens cached: one query reads every key.
        """
        return self.forward(hidden_t, cache)
