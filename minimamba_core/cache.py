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

    def __post_init__(self) -> None:
        """Refuse a malformed cache at once, not deep inside a forward pass.

        Raises:
            TypeError: ``layers`` is not a non-empty list of dicts of tensors (MiniMamba 0.1's
            ``InferenceCache(conv_states, ssm_states)`` included: allocate with
            ``model.allocate_inference_cache(batch_size)``).
            ValueError: one dict shared by two layers, or ``seqlen_offset`` not an int ``>= 0``.
        """
        fix = "build one with model.allocate_inference_cache(batch_size)"
        ok = (isinstance(self.layers, list) and self.layers
              and all(isinstance(layer, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                      for k, t in layer.items())
                      for layer in self.layers))  # an empty dict: a layer that keeps no state
        if not ok:
            raise TypeError(f"InferenceCache(layers, seqlen_offset) takes a non-empty list with one dict of named "
                            f"state tensors per layer; {fix}")
        if len({id(layer) for layer in self.layers}) != len(self.layers):
            raise ValueError(f"two layers of this cache share one dict of states: each layer needs its own; {fix}")
        if isinstance(self.seqlen_offset, bool) or not isinstance(self.seqlen_offset, int) or self.seqlen_offset < 0:
            raise ValueError(f"seqlen_offset must be an int >= 0, got {self.seqlen_offset!r}")

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

    def _named(self, name: str) -> list[torch.Tensor]:
        missing = [i for i, layer in enumerate(self.layers) if name not in layer]
        if missing:
            raise KeyError(f"layer {missing[0]} of this cache holds {sorted(self.layers[missing[0]])}, no {name!r} "
                           f"(not a Mamba-1 layer); read cache.layers[i] instead")
        return [layer[name] for layer in self.layers]

    @property
    def conv_states(self) -> list[torch.Tensor]:
        """Every (Mamba-1) layer's ``conv_state`` (a new list; assign through ``layers[i]["conv_state"]``)."""
        return self._named("conv_state")

    @property
    def ssm_states(self) -> list[torch.Tensor]:
        """Every (Mamba-1) layer's ``ssm_state`` (a new list; assign through ``layers[i]["ssm_state"]``)."""
        return self._named("ssm_state")

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor of every layer."""
        return [t for layer in self.layers for t in layer.values()]

    @property
    def batch_size(self) -> int | None:
        """The number of sequences the states hold; ``None`` when no layer keeps a state."""
        tensors = self.tensors()
        return tensors[0].shape[0] if tensors else None

    @property
    def dtype(self) -> torch.dtype:
        """The lowest precision among the floating-point states (they normally share one dtype)."""
        floats = [t.dtype for t in self.tensors() if t.is_floating_point()]
        if floats:
            return max(floats, key=lambda d: torch.finfo(d).eps)
        return self.tensors()[0].dtype if self.tensors() else None

    def check(self, shapes: list[dict[str, tuple]], batch_size: int, device: torch.device | None = None,
              compute_dtype: torch.dtype | list[torch.dtype] | None = None) -> None:
        """Raise ``ValueError`` when this cache does not fit the model about to use it.

        Args:
            shapes: per layer, the state names and shapes the model's mixers need for this
                cache's batch size (``model.state_shapes(cache.batch_size)``); ``None`` in a shape
                is a dimension that may have any size (a state that grows, such as attention's keys).
            batch_size: the input's batch size.
            device: the model's device.
            compute_dtype: the precision the model computes its states in (float32 or float64), or
                one per layer; a cache holding any floating-point state in a lower precision is
                refused, naming both dtypes, rather than upcast: its earlier states were already
                rounded.

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
            fits = have.keys() == want.keys() and all(
                len(have[k]) == len(want[k]) and all(w is None or h == w for h, w in zip(have[k], want[k]))
                for k in want)
            if not fits:
                raise ValueError(f"this cache was built for another model: layer {i} holds {have}, the model "
                                 f"needs {want}; {fix}")
        if not self.tensors():  # no layer keeps a state: any batch, any device
            return
        if batch_size != self.batch_size:
            raise ValueError(f"this cache holds {self.batch_size} sequences but the input has batch "
                             f"size {batch_size}; {fix}")
        where = self.tensors()[0].device
        if device is not None and where != torch.device(device):
            raise ValueError(f"this cache lives on {where} but the model on {device}; {fix}")
        if compute_dtype is None:
            return
        wanted = compute_dtype if isinstance(compute_dtype, (list, tuple)) else [compute_dtype] * len(self.layers)
        for i, (layer, acc) in enumerate(zip(self.layers, wanted)):
            low = sorted({str(t.dtype) for t in layer.values()
                          if t.is_floating_point() and torch.finfo(t.dtype).eps > torch.finfo(acc).eps})
            if low:
                raise ValueError(
                    f"this cache holds {' and '.join(low)} states (layer {i}) but the model computes in "
                    f"{acc}: decoding would round every state to the cache's precision; {fix}")

    def reset(self) -> None:
        """Zero every state and set ``seqlen_offset`` back to 0 (reuse for a new prompt).

        An attention layer's keys and values keep their length, zeroed, but it reads only the
        first ``seqlen_offset`` entries, so the next prefill replaces them (``attention.py``)."""
        for t in self.tensors():
            t.zero_()
        self.seqlen_offset = 0

    def nbytes(self) -> int:
        """Memory held by the states, in bytes (constant in the sequence length for SSM layers)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())
