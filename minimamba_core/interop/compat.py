"""Drop-in names for users of MiniMamba (PyPI ``minimamba``) and of mamba_ssm's ``InferenceParams``.

``Mamba`` is :class:`~minimamba_core.model.MambaLM` with the calling convention of MiniMamba's
``Mamba`` (``Mamba(config=config)``, ``model(input_ids, inference_params)``, logits returned as
a tensor) and the caching protocol of ``mamba_ssm`` (state-spaces/mamba, commit 0cce0fa;
``InferenceParams`` in ``mamba_ssm/utils/generation.py``, ``Mamba.forward`` and
``_get_states_from_cache`` in ``mamba_ssm/modules/mamba_simple.py``):

* the caller owns an object with ``seqlen_offset`` (an int) and ``key_value_memory_dict`` (a
  dict) and passes it as ``inference_params=``;
* each layer keeps its states under its index: ``key_value_memory_dict[i] = (conv_state,
  ssm_state)`` with ``conv_state (b, d_inner, d_conv)`` and ``ssm_state (b, d_inner, d_state)``
  (a Mamba-2 layer: ``(b, d_inner + 2 ngroups d_state, d_conv)`` and ``(b, nheads, headdim, d_state)``,
  as ``Mamba2._get_states_from_cache`` in ``mamba_ssm/modules/mamba2.py``);
* a call with ``seqlen_offset == 0`` is the prefill: it starts from zero states, whatever the
  dict holds, and leaves the final states there;
* a call with ``seqlen_offset > 0`` continues from the stored states;
* the model never touches ``seqlen_offset``: the caller adds the number of tokens it fed.

The computation is :class:`MambaLM`'s: the full forward with an explicit
:class:`~minimamba_core.cache.InferenceCache` built over the dict's tensors, or
:meth:`MambaLM.step` for one token. The dict is only a store; nothing hidden lives on the module.

Differences from mamba_ssm, all on purpose: ``forward`` returns the logits tensor (MiniMamba's
convention), not a ``CausalLMOutput`` namedtuple; a continuation may feed several tokens at once
(mamba_ssm's step takes exactly one); states are float32 (float64 for a float64 model) whatever
the model's dtype; ``max_seqlen``, ``max_batch_size``, ``batch_size_offset``,
``lengths_per_sample`` and ``position_ids`` are accepted and unused, as by mamba_ssm's Mamba
mixer. What MiniMamba 1.0.1 computes differently is listed in ``docs/coming_from_minimamba.md``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..cache import InferenceCache
from ..config import MambaConfig
from ..checks import check_input_ids
from ..model import MambaLM


@dataclass
class InferenceParams:
    """The caller-owned decoding state of mamba_ssm's protocol (its field names and defaults).

    Attributes:
        max_seqlen, max_batch_size: kept for compatibility; a Mamba state does not grow with
            the sequence, so nothing is pre-allocated from them.
        seqlen_offset: tokens already consumed; ``0`` means the next call is a prefill.
            The caller advances it after each call by the number of tokens fed.
        batch_size_offset, lengths_per_sample: kept for compatibility, unused.
        key_value_memory_dict: ``{layer_idx: (conv_state (b, d_inner, d_conv),
            ssm_state (b, d_inner, d_state))}``, filled by the model.

    ``InferenceParams()`` (no arguments) works, as MiniMamba 1.0.1's did.
    """

    max_seqlen: int = 0
    max_batch_size: int = 0
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)
    lengths_per_sample: torch.Tensor | None = None

    def reset(self, max_seqlen: int | None = None, max_batch_size: int | None = None) -> None:
        """Start over: ``seqlen_offset = 0`` and no stored states (optionally new maxima)."""
        if max_seqlen is not None:
            self.max_seqlen = max_seqlen
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        self.seqlen_offset = 0
        self.key_value_memory_dict.clear()
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()


def _check_inference_params(params: Any) -> tuple[int, MutableMapping]:
    offset = getattr(params, "seqlen_offset", None)
    store = getattr(params, "key_value_memory_dict", None)
    if not isinstance(store, MutableMapping) or isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(
            "inference_params must have an int `seqlen_offset` and a dict `key_value_memory_dict` "
            "(mamba_ssm's InferenceParams, minimamba_core.InferenceParams, or any object with "
            f"those two attributes); got {type(params).__name__} with seqlen_offset={offset!r} "
            f"and key_value_memory_dict of type {type(store).__name__}")
    if offset < 0:
        raise ValueError(f"inference_params.seqlen_offset must be >= 0, got {offset}")
    return offset, store


class Mamba(MambaLM):
    """MiniMamba's ``Mamba`` class on top of :class:`MambaLM` (same modules, weights and math).

    Args:
        config: a :class:`MambaConfig`, or a dict of its fields; or leave it out and pass the
            fields as keyword arguments (``Mamba(d_model=512, n_layer=6, vocab_size=10000)``).

    Raises:
        TypeError: both ``config`` and keyword fields, or a ``config`` of another type.
        ValueError: bad hyper-parameters (from :class:`MambaConfig`).
    """

    def __init__(self, config: MambaConfig | dict | None = None, **fields: Any) -> None:
        if config is None:
            config = MambaConfig(**fields)
        elif fields:
            raise TypeError(f"give either config= or keyword fields, not both "
                            f"(got config and {sorted(fields)})")
        elif isinstance(config, dict):
            config = MambaConfig.from_dict(config)
        super().__init__(config)

    def forward(self, input_ids: torch.Tensor, inference_params: Any = None, num_last_tokens: int = 0,
                attention_mask: torch.Tensor | None = None, *, cache: InferenceCache | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(b, l or num_last_tokens, padded_vocab_size)`` for ``input_ids (b, l)``.

        Args:
            input_ids: token ids in ``[0, vocab_size)``, shape ``(b, l)``, integer dtype.
            inference_params: optional mamba_ssm-style state (see the module docstring): a
                prefill at ``seqlen_offset == 0``, a continuation after. An
                :class:`InferenceCache` given here is used as ``cache``.
            num_last_tokens, attention_mask, cache: as :meth:`MambaLM.forward` (positions as
                there, except that the second one is ``inference_params``).
            position_ids: accepted for mamba_ssm's callers and ignored (Mamba has no positions).

        Returns:
            logits in the model's dtype; ``inference_params.key_value_memory_dict`` updated,
            ``seqlen_offset`` left to the caller.

        Raises:
            TypeError: an ``inference_params`` without an int ``seqlen_offset`` and a dict
                ``key_value_memory_dict``; both ``inference_params`` and ``cache``; bad ids.
            ValueError: negative ``seqlen_offset``; ``seqlen_offset > 0`` while the dict lacks a
                layer's states or holds states for another model or batch size; as
                :meth:`MambaLM.forward` otherwise.
        """
        if cache is not None and inference_params is not None:
            raise TypeError("give either inference_params= (mamba_ssm protocol) or cache= "
                            "(InferenceCache), not both")
        if isinstance(inference_params, InferenceCache):  # MambaLM's positional `cache`
            inference_params, cache = None, inference_params
        if inference_params is None:
            return super().forward(input_ids, cache=cache, num_last_tokens=num_last_tokens,
                                   attention_mask=attention_mask)
        offset, store = _check_inference_params(inference_params)
        check_input_ids(input_ids, self.config.vocab_size)
        if isinstance(num_last_tokens, bool) or not isinstance(num_last_tokens, int) or num_last_tokens < 0:
            raise ValueError(f"num_last_tokens must be an int >= 0, got {num_last_tokens!r}")
        b, l = input_ids.shape
        if offset == 0:  # the prefill starts from zeros, as mamba_ssm's does
            view = self.allocate_inference_cache(b)
        else:
            view = self._cache_from_store(store, b, offset)
        if l == 1 and offset > 0 and attention_mask is None:
            logits = self.step(input_ids, view)  # (b, 1, V): constant work per token
        else:
            logits = super().forward(input_ids, cache=view, num_last_tokens=num_last_tokens,
                                     attention_mask=attention_mask)
        self._write_store(store, view)
        return logits

    def _cache_from_store(self, store: MutableMapping, b: int, offset: int) -> InferenceCache:
        """An :class:`InferenceCache` whose layers hold the dict's tensors (cast to the model's precision)."""
        p = self.backbone.embedding.weight
        acc = self.compute_dtype()
        conv, ssm = [], []
        for i in range(self.config.n_layer):
            entry = store.get(i)
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2
                    and all(isinstance(t, torch.Tensor) for t in entry)):
                raise ValueError(
                    f"inference_params.seqlen_offset is {offset} but key_value_memory_dict[{i}] is "
                    f"{type(entry).__name__}, not a (conv_state, ssm_state) pair of tensors; run the "
                    f"prefill with seqlen_offset=0 first")
            low = [t.dtype for t in entry if t.is_floating_point()
                   and torch.finfo(t.dtype).eps > torch.finfo(acc).eps]
            if low:
                raise ValueError(
                    f"key_value_memory_dict[{i}] holds {low[0]} states but the model computes in {acc}: "
                    f"decoding would go on from rounded states; prefill again with seqlen_offset=0 "
                    f"(the model writes {acc} states)")
            # copies: the step may save its input state for backward, and _write_store later
            # overwrites the caller's tensors in place
            conv.append(entry[0].to(device=p.device, dtype=acc, copy=True))  # Mamba-1: (b, d_inner, d_conv)
            ssm.append(entry[1].to(device=p.device, dtype=acc, copy=True))  # Mamba-1: (b, d_inner, d_state)
        shapes = self.state_shapes(b)  # each layer's, from its mixer (Mamba-2: (b, H, P, N) states)
        for i in range(self.config.n_layer):
            want = (shapes[i]["conv_state"], shapes[i]["ssm_state"])
            if (tuple(conv[i].shape), tuple(ssm[i].shape)) != want:
                raise ValueError(
                    f"key_value_memory_dict[{i}] holds states of shapes {tuple(conv[i].shape)} and "
                    f"{tuple(ssm[i].shape)}; this model with batch size {b} needs {want[0]} and "
                    f"{want[1]} (states of another model or batch size? prefill with seqlen_offset=0)")
        return InferenceCache([{"conv_state": c, "ssm_state": s} for c, s in zip(conv, ssm)], offset)

    @staticmethod
    def _write_store(store: MutableMapping, view: InferenceCache) -> None:
        """Leave the final states under each layer index; in place where the caller's tensors fit."""
        for i, (conv, ssm) in enumerate(zip(view.conv_states, view.ssm_states)):
            old = store.get(i)
            fits = (isinstance(old, (tuple, list)) and len(old) == 2
                    and all(isinstance(t, torch.Tensor) and t.shape == n.shape and t.dtype == n.dtype
                            and t.device == n.device for t, n in zip(old, (conv, ssm))))
            if fits:  # mamba_ssm updates the states in place; keep references held by the caller valid
                old[0].copy_(conv)
                old[1].copy_(ssm)
            else:
                store[i] = (conv, ssm)
