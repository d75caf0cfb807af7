"""The explicit inference cache: what a Mamba model remembers between decoding steps.

Per layer, two fixed-size tensors (no growth with the sequence length, unlike attention's
key/value cache):

* ``conv_state (b, d_inner, d_conv)``: the last ``d_conv`` inputs of the causal convolution
  (before it), oldest first, left-padded with zeros when fewer were seen;
* ``ssm_state (b, d_inner, d_state)``: the SSM state ``h_t`` (paper eq. 2a).

Both hold the precision the model computes in: float32 for a float32 or half-precision model,
float64 for a float64 one. ``model.allocate_inference_cache(batch_size)`` (the ``mamba_ssm``
convention) builds such a cache on the model's device; a forward or step refuses a cache of
lower precision than the model computes in (it would round every state silently). ``seqlen_offset``
counts the tokens already consumed; the model advances it. A forward pass given a cache with
``seqlen_offset == 0`` is the prefill. Mirrors ``InferenceParams`` of state-spaces/mamba
(commit 0cce0fa, ``mamba_ssm/utils/generation.py``), with the states held in explicit lists
instead of a dict keyed by layer. Built in notebook ``07_cached_inference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import MambaConfig


@dataclass
class InferenceCache:
    """Per-layer recurrent state of a Mamba model.

    Attributes:
        conv_states: ``n_layer`` tensors ``(b, d_inner, d_conv)``.
        ssm_states: ``n_layer`` tensors ``(b, d_inner, d_state)``.
        seqlen_offset: number of tokens already consumed (advanced by the model).
    """

    conv_states: list[torch.Tensor]
    ssm_states: list[torch.Tensor]
    seqlen_offset: int = 0

    @classmethod
    def empty(cls, config: MambaConfig, batch_size: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> "InferenceCache":
        """A zero cache for ``batch_size`` sequences of a model built from ``config``.

        Prefer ``model.allocate_inference_cache(batch_size)``, which takes the device and the
        precision from the model; this constructor sees only the config.

        Args:
            config: the model's configuration.
            batch_size: number of sequences decoded together, ``b > 0``.
            device: where the states live (default: CPU); use the model's device.
            dtype: float32 (default) or float64; never the half-precision model dtype. A float64
                model refuses a float32 cache.

        Raises:
            TypeError: ``config`` is not a :class:`MambaConfig`.
            ValueError: ``batch_size < 1`` or a dtype other than float32/float64.
        """
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config must be a MambaConfig, got {type(config).__name__}")
        check_batch_size(batch_size)
        check_state_dtype(dtype)
        b, d, k, n = batch_size, config.d_inner, config.d_conv, config.d_state
        conv = [torch.zeros(b, d, k, device=device, dtype=dtype) for _ in range(config.n_layer)]
        ssm = [torch.zeros(b, d, n, device=device, dtype=dtype) for _ in range(config.n_layer)]
        return cls(conv, ssm, 0)

    @property
    def batch_size(self) -> int:
        return self.ssm_states[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.ssm_states[0].dtype

    def check(self, config: MambaConfig, batch_size: int, device: torch.device | None = None,
              compute_dtype: torch.dtype | None = None) -> None:
        """Raise ``ValueError`` when this cache does not fit the model about to use it.

        Args:
            config, batch_size, device: the model's config, the input's batch size, the model's device.
            compute_dtype: the precision the model computes its states in (float32 or float64); a
                cache holding any state in a lower precision is refused, naming both dtypes,
                rather than upcast: its earlier states were already rounded.

        Raises:
            TypeError: ``config`` is not a :class:`MambaConfig`.
            ValueError: another model's shapes, another batch size, another device, or states of
            lower precision than ``compute_dtype``.
        """
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config must be a MambaConfig, got {type(config).__name__}")
        wanted = (config.n_layer, config.d_inner, config.d_conv, config.d_state)
        have = (len(self.ssm_states), self.conv_states[0].shape[1], self.conv_states[0].shape[2],
                self.ssm_states[0].shape[2])
        if have != wanted:
            raise ValueError(
                f"this cache was built for another model: (n_layer, d_inner, d_conv, d_state) = "
                f"{have}, the model has {wanted}; build one with "
                f"InferenceCache.empty(model.config, batch_size, device)")
        if batch_size != self.batch_size:
            raise ValueError(f"this cache holds {self.batch_size} sequences but the input has batch "
                             f"size {batch_size}; build one with InferenceCache.empty(config, {batch_size})")
        if device is not None and self.ssm_states[0].device != torch.device(device):
            raise ValueError(f"this cache lives on {self.ssm_states[0].device} but the model on {device}; "
                             f"build one with InferenceCache.empty(config, {batch_size}, device={str(device)!r})")
        if compute_dtype is not None:
            low = {t.dtype for t in self.conv_states + self.ssm_states
                   if torch.finfo(t.dtype).eps > torch.finfo(compute_dtype).eps}
            if low:
                raise ValueError(
                    f"this cache holds {' and '.join(sorted(map(str, low)))} states but the model computes in "
                    f"{compute_dtype}: decoding would round every state to the cache's precision; build "
                    f"one with model.allocate_inference_cache({batch_size}) (or "
                    f"InferenceCache.empty(config, {batch_size}, dtype={compute_dtype}))")

    def reset(self) -> None:
        """Zero every state and set ``seqlen_offset`` back to 0 (reuse for a new prompt)."""
        for t in self.conv_states + self.ssm_states:
            t.zero_()
        self.seqlen_offset = 0

    def nbytes(self) -> int:
        """Memory held by the states, in bytes (constant in the sequence length)."""
        return sum(t.numel() * t.element_size() for t in self.conv_states + self.ssm_states)


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is an int ``>= 1`` (bools refused)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def check_state_dtype(dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless ``dtype`` is float32 or float64 (states never live in half precision)."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cache dtype must be torch.float32 or torch.float64, got {dtype}")
