"""The Mamba language model: embedding, a stack of residual blocks, a final norm, a tied head.

Official counterpart: ``MambaLMHeadModel`` and ``MixerModel`` in
``mamba_ssm/models/mixer_seq_simple.py`` (state-spaces/mamba, commit 0cce0fa); module names are
the checkpoint's (``backbone.embedding``, ``backbone.layers.{i}.norm``/``.mixer``,
``backbone.norm_f``, ``lm_head``), so a state dict loads by name.

The block is pre-norm: ``residual <- residual + mixer(norm(residual))``, and with
``d_intermediate > 0`` then ``residual <- residual + mlp(norm2(residual))`` (the official
``Block`` with a ``GatedMLP``). Each layer's mixer comes from a registry keyed by
``config.ssm_cfg["layer"]`` (``"MHA"`` at ``attn_layer_idx``): a new model generation adds its
mixer as a sibling file and registers it, and reuses this LM, the cache and ``generate``. The official code
writes the same sum with a fused add+norm that carries the residual to the next block; the
result is the same function. With ``residual_in_fp32`` the residual stream stays float32 in a
bf16/fp16 model. Built in notebook ``06_language_model``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionMixer
from .cache import InferenceCache
from .checks import check_attention_mask, check_input_ids
from .config import MambaConfig
from .mixer import MambaMixer
from .mixer2 import Mamba2Mixer
from .mixer3 import Mamba3Mixer
from .norm import RMSNorm


# The mixer registry: ssm_cfg["layer"] (or "MHA" at attn_layer_idx) -> the class built there. A
# mixer class takes (config, layer_idx) and has forward(hidden, cache, attention_mask),
# step(hidden_t, cache), state_shapes(batch_size), allocate_inference_cache(batch_size,
# max_seqlen, dtype) and compute_dtype(). Later model generations register their own.
MIXERS: dict[str, type[nn.Module]] = {"Mamba1": MambaMixer, "Mamba2": Mamba2Mixer, "Mamba3": Mamba3Mixer,
                                      "MHA": AttentionMixer}
MIXER_METHODS = ("forward", "step", "state_shapes", "allocate_inference_cache", "compute_dtype")


def register_mixer(layer: str, mixer_cls: type[nn.Module]) -> None:
    """Make ``MambaConfig(ssm_cfg={"layer": layer})`` build ``mixer_cls(config, layer_idx)``.

    Raises:
        ValueError: ``layer`` is not a non-empty str without surrounding spaces, ``mixer_cls`` is
        not an ``nn.Module`` class with the methods of ``MIXER_METHODS``, or ``layer`` is
        registered to another class.
    """
    if not isinstance(layer, str) or not layer or layer != layer.strip():
        raise ValueError(f"a mixer is registered under a layer name such as 'Mamba2', got {layer!r}")
    if not (isinstance(mixer_cls, type) and issubclass(mixer_cls, nn.Module)):
        raise ValueError(f"a mixer must be an nn.Module class taking (config, layer_idx), got {mixer_cls!r}")
    missing = [m for m in MIXER_METHODS if not callable(getattr(mixer_cls, m, None))]
    if missing:
        raise ValueError(f"{mixer_cls.__name__} lacks {missing}: a mixer has {list(MIXER_METHODS)} "
                         f"(see minimamba_core/mixer.py, MambaMixer)")
    if MIXERS.get(layer, mixer_cls) is not mixer_cls:
        raise ValueError(f"layer {layer!r} is already registered to {MIXERS[layer].__name__}")
    MIXERS[layer] = mixer_cls


def build_mixer(config: MambaConfig, layer_idx: int) -> nn.Module:
    """The mixer of layer ``layer_idx``, from the registry.

    Raises:
        ValueError: the layer kind (``ssm_cfg["layer"]``, or ``"MHA"`` for ``attn_layer_idx``)
        has no registered mixer.
    """
    kind = config.layer_kind(layer_idx)
    if kind not in MIXERS:
        key = "attn_layer_idx" if layer_idx in config.attn_layer_idx else "ssm_cfg['layer']"
        raise ValueError(f"{key} asks for a {kind!r} layer at index {layer_idx}, which has no registered mixer; "
                         f"registered: {sorted(MIXERS)}")
    return MIXERS[kind](config, layer_idx)


class GatedMLP(nn.Module):
    """``fc2(y * silu(gate))`` with ``y, gate = fc1(x).chunk(2)``: ``(b, l, d_model) -> (b, l, d_model)``.

    The official ``GatedMLP`` (``mamba_ssm/modules/mlp.py``, commit 60dadf2) with its defaults:
    no biases, hidden width ``d_intermediate`` rounded up to a multiple of 128. ``fc2`` is a
    residual branch's output: the official ``_init_weights`` (``mixer_seq_simple.py``) scales it
    by ``1/sqrt(2 n_layer)``, two residual branches per layer, and so do we (``n_layer`` given).
    """

    def __init__(self, d_model: int, d_intermediate: int, multiple_of: int = 128, n_layer: int = 1) -> None:
        super().__init__()
        hidden = -(-d_intermediate // multiple_of) * multiple_of
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)
        with torch.no_grad():
            self.fc2.weight /= math.sqrt(2 * n_layer)  # the default init is kaiming_uniform(a=sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)  # (b, l, hidden) each
        return self.fc2(y * F.silu(gate))  # (b, l, d_model)


class ResidualBlock(nn.Module):
    """``RMSNorm -> mixer -> + residual``, then with ``d_intermediate > 0`` ``RMSNorm -> GatedMLP -> + residual``.

    ``(b, l, d_model) -> (b, l, d_model)``; the mixer comes from the registry (:func:`build_mixer`).
    """

    def __init__(self, config: MambaConfig, layer_idx: int) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mixer = build_mixer(config, layer_idx)
        if config.d_intermediate > 0:
            self.norm2 = RMSNorm(config.d_model, eps=config.rms_norm_eps)
            self.mlp = GatedMLP(config.d_model, config.d_intermediate, n_layer=config.n_layer)

    def _mlp(self, residual: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "mlp"):
            return residual
        return residual + self.mlp(self.norm2(residual))  # (b, l, d_model)

    def forward(self, residual: torch.Tensor, cache: InferenceCache | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._mlp(residual + self.mixer(self.norm(residual), cache, attention_mask))

    def step(self, residual_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        return self._mlp(residual_t + self.mixer.step(self.norm(residual_t), cache))


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
        check_input_ids(input_ids, self.config.vocab_size)
        if isinstance(num_last_tokens, bool) or not isinstance(num_last_tokens, int) or num_last_tokens < 0:
            raise ValueError(f"num_last_tokens must be an int >= 0, got {num_last_tokens!r}")
        if cache is not None:
            if not isinstance(cache, InferenceCache):
                raise TypeError(f"cache must be an InferenceCache or None, got {type(cache).__name__}")
            cache.check(self.state_shapes(cache.batch_size), input_ids.shape[0],
                        self.backbone.embedding.weight.device, self.layer_compute_dtypes())
        if attention_mask is not None:
            attention_mask = check_attention_mask(attention_mask, input_ids)  # (b, l) bool
        residual = self._embed(input_ids)  # (b, l, d_model)
        for layer in self.backbone.layers:
            residual = layer(residual, cache, attention_mask)  # (b, l, d_model)
        if num_last_tokens > 0:
            residual = residual[:, -num_last_tokens:]
        logits = self.lm_head(self.backbone.norm_f(residual))  # (b, l, padded_vocab_size)
        if cache is not None:
            cache.seqlen_offset += input_ids.shape[1]
        return logits

    def step(self, input_ids_t: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step: ``input_ids_t (b, 1)`` -> logits ``(b, 1, padded_vocab_size)``.

        Constant time and memory in the sequence length; updates ``cache`` in place and
        advances ``cache.seqlen_offset`` by one. Equal to the matching row of :meth:`forward`.

        Raises:
            TypeError/ValueError: as :meth:`forward`; also a shape other than ``(b, 1)``, a
            missing cache.
        """
        check_input_ids(input_ids_t, self.config.vocab_size, "input_ids_t")
        if input_ids_t.shape[1] != 1:
            raise ValueError(f"step takes one token per row, shape (b, 1); got {tuple(input_ids_t.shape)}")
        if not isinstance(cache, InferenceCache):
            raise TypeError("step needs an InferenceCache (run a prefill with forward(..., cache=cache) first)")
        cache.check(self.state_shapes(cache.batch_size), input_ids_t.shape[0],
                    self.backbone.embedding.weight.device, self.layer_compute_dtypes())
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
        the full forward to float64 round-off. ``max_seqlen`` is accepted and unused (SSM
        states have a fixed size; attention's keys and values grow as tokens come).

        Returns:
            ``InferenceCache`` with one entry per layer, each allocated by that layer's mixer (a
            Mamba-1 layer: ``conv_state (b, d_inner, d_conv)``, ``ssm_state (b, d_inner, d_state)``;
            an attention layer: empty ``key``, ``value``, ``key_mask``), ``seqlen_offset = 0``.

        Raises:
            ValueError: ``batch_size < 1``; a dtype other than float32/float64.
        """
        return InferenceCache([layer.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype)
                               for layer in self.backbone.layers], 0)

    def layer_compute_dtypes(self) -> list[torch.dtype]:
        """Per layer, the precision its mixer computes and keeps its states in."""
        return [layer.mixer.compute_dtype() for layer in self.backbone.layers]

    def state_shapes(self, batch_size: int) -> list[dict[str, tuple]]:
        """Per layer, the names and shapes of the states its mixer keeps for ``batch_size`` sequences."""
        return [layer.mixer.state_shapes(batch_size) for layer in self.backbone.layers]

    def empty_cache(self, batch_size: int) -> InferenceCache:
        """``allocate_inference_cache(batch_size)``: a zero cache in this model's precision and device."""
        return self.allocate_inference_cache(batch_size)
