"""The explicit inference cache: what a model remembers between decoding steps.

One entry per layer, a dict of named tensors that the layer's mixer allocates
(``mixer.allocate_inference_cache``, as in ``mamba_ssm``) and updates. A Mamba-1 mixer keeps two
fixed-size tensors (no growth with the sequence length, unlike attention's key/value cache):

* ``conv_state (b, d_inner, d_conv)``: the last ``d_conv`` inputs of the causal convolution
  (before it), oldest first, left-padded with zeros when fewer were seen;
* ``ssm_state (b, d_inner, d_state)``: the SSM state ``h_t`` (paper eq. 2a).

Other layer kinds bring their own names and shapes (a Mamba-2 ``(b, h, p, n)`` state, an
attention layer's growing keys and values); the cache itself only holds them.

Both hold the precision the model computes in: float32 for a float32 or half-precision model,
float64 for a float64 one. ``model.allocate_inference_cache(batch_size)`` (the ``mamba_ssm``
convention) builds such a cache on the model's device; a forward or step refuses a cache of
lower precision than the model computes in (it would round every state silently). ``seqlen_offset``
counts the tokens already consumed; the model advances it. A forward pass given a cache with
``seqlen_offset == 0`` is the prefill. Mirrors ``InferenceParams`` of state-spaces/mamba
(commit 0cce0fa, ``mamba_ssm/utils/generation.py``), with the states held in an explicit list
instead of a dict keyed by layer. Built in notebook ``07_cached_inference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_batch_size, check_state_dtype
from .config import MambaConfig


@dataclass
class InferenceCache:
    """Per-layer recurrent state of a model, passed in and updated in place.

    Attributes:
        layers: one dict per layer, ``{state name: tensor}``; a Mamba-1 layer's is
            ``{"conv_state": (b, d_inner, d_conv), "ssm_state": (b, d_inner, d_state)}``.
        seqlen_offset: number of tokens already consumed (advanced by the model).
    """

    layers: list[dict[str, torch.Tensor]]
    seqlen_offset: int = 0

    @classmethod
    def empty(cls, config: MambaConfig, batch_size: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> "InferenceCache":
        """A zero cache for ``batch_size`` sequences of a Mamba-1 model built from ``config``.

        Prefer ``model.allocate_inference_cache(batch_size)``, which asks each layer's mixer and
        takes the device and the precision from the model; this constructor sees only the config.

        Args:
            config: the model's configuration (every layer a ``"Mamba1"`` mixer).
            batch_size: number of sequences decoded together, ``b > 0``.
            device: where the states live (default: CPU); use the model's device.
            dtype: float32 (default) or float64; never the half-precision model dtype. A float64
                model refuses a float32 cache.

        Raises:
            TypeError: ``config`` is not a :class:`MambaConfig`.
            ValueError: ``batch_size < 1``, a dtype other than float32/float64, or a config with
            other layer kinds than Mamba-1.
        """
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config must be a MambaConfig, got {type(config).__name__}")
        check_batch_size(batch_size)
        check_state_dtype(dtype)
        kinds = sorted({config.layer_kind(i) for i in range(config.n_layer)} - {"Mamba1"})
        if kinds:
            raise ValueError(f"InferenceCache.empty builds Mamba-1 states only, the config has {kinds} layers; "
                             f"use model.allocate_inference_cache(batch_size)")
        b, d, k, n = batch_size, config.d_inner, config.d_conv, config.d_state
        layers = [{"conv_state": torch.zeros(b, d, k, device=device, dtype=dtype),   # (b, d_inner, d_conv)
                   "ssm_state": torch.zeros(b, d, n, device=device, dtype=dtype)}   # (b, d_inner, d_state)
                  for _ in range(config.n_layer)]
        return cls(layers, 0)

    @property
    def conv_states(self) -> list[torch.Tensor]:
        """Every layer's ``conv_state`` (a new list; assign through ``layers[i]["conv_state"]``)."""
        return [layer["conv_state"] for layer in self.layers]

    @property
    def ssm_states(self) -> list[torch.Tensor]:
        """Every layer's ``ssm_state`` (a new list; assign through ``layers[i]["ssm_state"]``)."""
        return [layer["ssm_state"] for layer in self.layers]

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor of every layer."""
        return [t for layer in self.layers for t in layer.values()]

    @property
    def batch_size(self) -> int:
        return self.tensors()[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """The lowest precision among the states (they normally share one dtype)."""
        return max((t.dtype for t in self.tensors()), key=lambda d: torch.finfo(d).eps)

    def check(self, shapes: list[dict[str, tuple]], batch_size: int, device: torch.device | None = None,
              compute_dtype: torch.dtype | None = None) -> None:
        """Raise ``ValueError`` when this cache does not fit the model about to use it.

        Args:
            shapes: per layer, the state names and shapes the model's mixers need for this
                cache's batch size (``model.state_shapes(cache.batch_size)``).
            batch_size: the input's batch size.
            device: the model's device.
            compute_dtype: the precision the model computes its states in (float32 or float64); a
                cache holding any state in a lower precision is refused, naming both dtypes,
                rather than upcast: its earlier states were already rounded.

        Raises:
            TypeError: ``shapes`` is not a list of dicts (a config, say: pass the model's shapes).
            ValueError: another model's layers or shapes, another batch size, another device, or
            states of lower precision than ``compute_dtype``.
        """
        if not isinstance(shapes, (list, tuple)) or not all(isinstance(s, dict) for s in shapes):
            raise TypeError(f"shapes must be a list of per-layer dicts {{state name: shape}}, as "
                            f"model.state_shapes(batch_size) gives; got {type(shapes).__name__}")
        fix = f"build one with model.allocate_inference_cache({batch_size})"
        if len(self.layers) != len(shapes):
            raise ValueError(f"this cache was built for another model: {len(self.layers)} layers, the model "
                             f"has {len(shapes)}; {fix}")
        for i, (layer, want) in enumerate(zip(self.layers, shapes)):
            have = {name: tuple(t.shape) for name, t in layer.items()}
            if have != want:
                raise ValueError(f"this cache was built for another model: layer {i} holds {have}, the model "
                                 f"needs {want}; {fix}")
        if batch_size != self.batch_size:
            raise ValueError(f"this cache holds {self.batch_size} sequences but the input has batch "
                             f"size {batch_size}; {fix}")
        where = self.tensors()[0].device
        if device is not None and where != torch.device(device):
            raise ValueError(f"this cache lives on {where} but the model on {device}; {fix}")
        if compute_dtype is not None:
            low = {t.dtype for t in self.tensors() if torch.finfo(t.dtype).eps > torch.finfo(compute_dtype).eps}
            if low:
                raise ValueError(
                    f"this cache holds {' and '.join(sorted(map(str, low)))} states but the model computes in "
                    f"{compute_dtype}: decoding would round every state to the cache's precision; {fix}")

    def reset(self) -> None:
        """Zero every state and set ``seqlen_offset`` back to 0 (reuse for a new prompt)."""
        for t in self.tensors():
            t.zero_()
        self.seqlen_offset = 0

    def nbytes(self) -> int:
        """Memory held by the states, in bytes (constant in the sequence length for SSM layers)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())
