"""The Mamba language model: embedding, a stack of residual blocks, a final norm, a tied head.

Official counterpart: ``MambaLMHeadModel`` and ``MixerModel`` in
``mamba_ssm/models/mixer_seq_simple.py`` (state-spaces/mamba, commit 0cce0fa); module names are
the checkpoint's (``backbone.embedding``, ``backbone.layers.{i}.norm``/``.mixer``,
``backbone.norm_f``, ``lm_head``), so a state dict loads by name.

The block is pre-norm: ``residual <- residual + mixer(norm(residual))``. The official code
writes the same sum with a fused add+norm that carries the residual to the next block; the
result is the same function. With ``residual_in_fp32`` the residual stream stays float32 in a
bf16/fp16 model. Built in notebook ``06_language_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from .cache import InferenceCache
from .config import MambaConfig
from .mixer import MambaMixer
from .norm import RMSNorm


class ResidualBlock(nn.Module):
    """``RMSNorm -> MambaMixer -> + residual``: ``(b, l, d_model) -> (b, l, d_model)``."""

    def __init__(self, config: MambaConfig, layer_idx: int) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mixer = MambaMixer(config, layer_idx)

    def forward(self, residual: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return residual + self.mixer(self.norm(residual), cache, attention_mask)

    def step(self, residual_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        return residual_t + self.mixer.step(self.norm(residual_t), cache)


class Backbone(nn.Module):
    """Embedding, residual blocks and final norm (the official ``MixerModel``)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(ResidualBlock(config, i) for i in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)


class MambaLM(nn.Module):
    """A Mamba language model with the official structure, names and initialization.

    Args:
        config: :class:`MambaConfig`.

    The embedding has ``config.padded_vocab_size`` rows; logits have that many columns too
    (as in the official model), the padded ones never being valid tokens. With
    ``tie_embeddings`` the head's weight *is* the embedding's (one tensor).
    """

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config must be a MambaConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)  # official initializer_range
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _check_input_ids(self, input_ids: torch.Tensor, name: str = "input_ids") -> None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding indexes with
            raise TypeError(f"{name} must hold integer token ids as torch.long (or torch.int32), got dtype "
                            f"{input_ids.dtype}; convert with input_ids.long()")
        if input_ids.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, seqlen), got {tuple(input_ids.shape)}; "
                             f"use input_ids[None] for a single sequence")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"{name} must lie in [0, vocab_size={self.config.vocab_size}), "
                             f"got values in [{lo}, {hi}]")

    def forward(self, input_ids: torch.Tensor, cache: InferenceCache | None = None,
                num_last_tokens: int = 0, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for every position: ``input_ids (b, l)`` int -> ``(b, l, padded_vocab_size)``.

        Args:
            input_ids: token ids in ``[0, vocab_size)``.
            cache: optional :class:`InferenceCache`; the sequence continues from it and it is
                updated in place (``seqlen_offset += l``). At ``seqlen_offset == 0``: the prefill.
            num_last_tokens: when > 0, only the logits of the last ``num_last_tokens`` positions.
            attention_mask: optional ``(b, l)`` bool or 0/1 integers, 0 on padding, for a batch of
                LEFT-padded rows (each row ``0...0 1...1``). Padded steps are skipped by every
                mixer (see :meth:`MambaMixer.forward`), so each row gets the logits it gets alone;
                logits at padded positions are meaningless. Padded positions must still hold
                valid ids. With a cache, a continuation may be left-padded too
                (``seqlen_offset`` then counts padded steps as well).

        Returns:
            logits ``(b, l or num_last_tokens, padded_vocab_size)`` in the model's dtype.

        Raises:
            TypeError: non-integer ids. ValueError: wrong rank, empty input, ids out of range,
            a cache for another model, batch size or device or of lower precision than the model
            computes in (a float32 cache for a float64 model), negative ``num_last_tokens``, an
            ``attention_mask`` of another shape, with values other than 0/1, or not left padding.
        """
        self._check_input_ids(input_ids)
        if isinstance(num_last_tokens, bool) or not isinstance(num_last_tokens, int) or num_last_tokens < 0:
            raise ValueError(f"num_last_tokens must be an int >= 0, got {num_last_tokens!r}")
        if cache is not None:
            if not isinstance(cache, InferenceCache):
                raise TypeError(f"cache must be an InferenceCache or None, got {type(cache).__name__}")
            cache.check(self.config, input_ids.shape[0], self.backbone.embedding.weight.device,
                        self.compute_dtype())
        if attention_mask is not None:
            attention_mask = self._check_attention_mask(attention_mask, input_ids)  # (b, l) bool
        residual = self._embed(input_ids)  # (b, l, d_model)
        for layer in self.backbone.layers:
            residual = layer(residual, cache, attention_mask)  # (b, l, d_model)
        if num_last_tokens > 0:
            residual = residual[:, -num_last_tokens:]
        logits = self.lm_head(self.backbone.norm_f(residual))  # (b, l, padded_vocab_size)
        if cache is not None:
            cache.seqlen_offset += input_ids.shape[1]
        return logits

    @staticmethod
    def _check_attention_mask(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Validate a left-padding mask; return it as bool ``(b, l)``, True on real tokens."""
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor (bool or 0/1 integers), "
                            f"got {type(attention_mask).__name__}")
        if attention_mask.is_floating_point() or attention_mask.is_complex():
            raise TypeError(f"attention_mask must hold bool or 0/1 integers, got dtype {attention_mask.dtype}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
        if attention_mask.device != input_ids.device:
            raise ValueError(f"attention_mask is on {attention_mask.device} but input_ids on {input_ids.device}")
        if attention_mask.dtype != torch.bool and bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), got values "
                             f"{sorted(set(attention_mask.unique().tolist()))}")
        keep = attention_mask.bool()  # (b, l)
        bad = keep[:, :-1] & ~keep[:, 1:]  # (b, l-1), a token followed by padding
        if bool(bad.any()):
            row, pos = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"attention_mask must be left padding (each row 0...0 1...1), got row {row} "
                             f"with a token at position {pos} followed by padding; pad on the left "
                             f"(a causal model needs no mask for right padding)")
        return keep

    def step(self, input_ids_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step: ``input_ids_t (b, 1)`` -> logits ``(b, 1, padded_vocab_size)``.

        Constant time and memory in the sequence length; updates ``cache`` in place and
        advances ``cache.seqlen_offset`` by one. Equal to the matching row of :meth:`forward`.

        Raises:
            TypeError/ValueError: as :meth:`forward`; also a shape other than ``(b, 1)``, a
            missing cache.
        """
        self._check_input_ids(input_ids_t, "input_ids_t")
        if input_ids_t.shape[1] != 1:
            raise ValueError(f"step takes one token per row, shape (b, 1); got {tuple(input_ids_t.shape)}")
        if not isinstance(cache, InferenceCache):
            raise TypeError("step needs an InferenceCache (run a prefill with forward(..., cache=cache) first)")
        cache.check(self.config, input_ids_t.shape[0], self.backbone.embedding.weight.device,
                    self.compute_dtype())
        residual = self._embed(input_ids_t)  # (b, 1, d_model)
        for layer in self.backbone.layers:
            residual = layer.step(residual, cache)
        cache.seqlen_offset += 1
        return self.lm_head(self.backbone.norm_f(residual))  # (b, 1, padded_vocab_size)

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.embedding(input_ids)  # (b, l, d_model)
        return hidden.float() if self.config.residual_in_fp32 and hidden.dtype != torch.float64 else hidden

    def compute_dtype(self) -> torch.dtype:
        """The precision the mixers compute and keep their states in: float32, or float64 for a float64 model."""
        return torch.promote_types(self.backbone.embedding.weight.dtype, torch.float32)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None) -> InferenceCache:
        """A zero :class:`InferenceCache` for ``batch_size`` sequences, on this model's device.

        The ``mamba_ssm`` convention (``MambaLMHeadModel.allocate_inference_cache``, commit
        0cce0fa): each layer's mixer allocates its own states. ``dtype`` defaults to
        :meth:`compute_dtype`, so a float64 model gets float64 states and cached decoding equals
        the full forward to float64 round-off. ``max_seqlen`` is accepted and unused (Mamba-1
        states have a fixed size).

        Returns:
            ``InferenceCache`` with ``conv_states[i] (b, d_inner, d_conv)``,
            ``ssm_states[i] (b, d_inner, d_state)``, ``seqlen_offset = 0``.

        Raises:
            ValueError: ``batch_size < 1``; a dtype other than float32/float64.
        """
        states = [layer.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype)
                  for layer in self.backbone.layers]
        return InferenceCache([conv for conv, _ in states], [ssm for _, ssm in states], 0)

    def empty_cache(self, batch_size: int) -> InferenceCache:
        """``allocate_inference_cache(batch_size)``: a zero cache in this model's precision and device."""
        return self.allocate_inference_cache(batch_size)
