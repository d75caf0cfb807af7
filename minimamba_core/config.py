"""The model's hyper-parameters: one flat dataclass.

Field names follow the official ``config.json`` of ``state-spaces/mamba-*``: the ``ssm_cfg``
entries are flattened to the top level, and ``ssm_cfg["layer"]`` picks the mixer; the letters in the comments are the paper's
(Gu & Dao 2023, arXiv 2312.00752, Section 3 and Appendix E). Converting to and from the nested
official form and the Hugging Face key names is :mod:`minimamba_core.interop.layouts`' job.

Built in notebook ``06_language_model``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DT_INIT_CHOICES = ("random", "constant")
# The mixers' keys that the official config nests under ``ssm_cfg`` (flat fields here too), per
# layer kind: the keyword arguments of ``Mamba`` (mamba_ssm/modules/mamba_simple.py) and of
# ``Mamba2`` (mamba_ssm/modules/mamba2.py), state-spaces/mamba commit 60dadf2.
MAMBA1_KEYS = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
               "dt_init_floor", "conv_bias", "bias")
MAMBA2_KEYS = ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size", "rmsnorm",
               "norm_before_gate", "D_has_hdim", "dt_min", "dt_max", "dt_init_floor", "dt_limit",
               "A_init_range", "conv_bias", "bias")
# ``Mamba3`` (mamba_ssm/modules/mamba3.py, commit e9594ce): no convolution, no dt_limit, A from in_proj.
MAMBA3_KEYS = ("d_state", "expand", "headdim", "ngroups", "chunk_size", "dt_min", "dt_max", "dt_init_floor",
               "rope_fraction", "A_floor", "is_outproj_norm", "is_mimo", "mimo_rank")
LAYER_KEYS = {"Mamba1": MAMBA1_KEYS, "Mamba2": MAMBA2_KEYS, "Mamba3": MAMBA3_KEYS}
SSM_KEYS = tuple(dict.fromkeys(MAMBA1_KEYS + MAMBA2_KEYS + MAMBA3_KEYS))  # every key; a registered kind may take any
MAMBA2_ONLY = tuple(k for k in MAMBA2_KEYS if k not in MAMBA1_KEYS)
MAMBA3_ONLY = tuple(k for k in MAMBA3_KEYS if k not in MAMBA1_KEYS + MAMBA2_KEYS)
# official keys without effect on the math (Mamba2's d_ssm and conv_init only at their default None)
SSM_IGNORED = ("use_fast_path", "layer_idx", "device", "dtype", "use_mem_eff_path", "sequence_parallel",
               "process_group")
SSM_NONE_ONLY = ("d_ssm", "conv_init")
# Per-layer-kind defaults, from the official modules' signatures (mamba_ssm/modules/mamba_simple.py,
# mamba2.py, commit 60dadf2) and the released Mamba-2 configs (vocabulary padded to 16).
# A kind not listed takes Mamba-1's until its own issue adds it.
LAYER_DEFAULTS = {"Mamba1": {"d_state": 16, "pad_vocab_size_multiple": 8},
                  "Mamba2": {"d_state": 128, "pad_vocab_size_multiple": 16},
                  "Mamba3": {"d_state": 128, "pad_vocab_size_multiple": 16}}
# The keyword arguments of the official attention layer (mamba_ssm/modules/mha.py, ``MHA``, commit
# 60dadf2), and one MiniMamba extension: ``max_position_embeddings``, the rows of a learned absolute
# position table (the Mamba paper's MHA-Abs rows; the official MHA has rotary positions only).
ATTN_KEYS = ("num_heads", "num_heads_kv", "head_dim", "mlp_dim", "qkv_proj_bias", "out_proj_bias",
             "softmax_scale", "causal", "d_conv", "rotary_emb_dim", "rotary_emb_base",
             "rotary_emb_interleaved", "max_position_embeddings")
# attn_cfg keys -> (what a value must be, the check); absent keys take minimamba_core/attention.py's defaults
_POSITIVE_INT = ("a positive int", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
_COUNT = ("an int >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
_BOOL = ("a bool", lambda v: isinstance(v, bool))
ATTN_VALUE_CHECKS = {
    "num_heads": _POSITIVE_INT, "num_heads_kv": ("a positive int or null", lambda v: v is None or _POSITIVE_INT[1](v)),
    "head_dim": ("a positive int or null", lambda v: v is None or _POSITIVE_INT[1](v)),
    "mlp_dim": ("0 (an MLP inside the attention layer is not supported: use d_intermediate)", lambda v: v == 0),
    "d_conv": ("0 (a convolution before attention is not supported)", lambda v: v == 0),
    "causal": ("true (a language model's attention is causal)", lambda v: v is True),
    "qkv_proj_bias": _BOOL, "out_proj_bias": _BOOL, "rotary_emb_interleaved": _BOOL,
    "softmax_scale": ("a positive number or null", lambda v: v is None or (isinstance(v, (int, float))
                                                                          and not isinstance(v, bool) and v > 0)),
    "rotary_emb_dim": ("an even int >= 0", lambda v: _COUNT[1](v) and v % 2 == 0),
    "rotary_emb_base": ("a positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
    "max_position_embeddings": _COUNT,
}
ATTENTION = "MHA"  # the layer kind at the indices of ``attn_layer_idx``


@dataclass
class MambaConfig:
    """Hyper-parameters of a Mamba language model.

    Args:
        d_model: width of the residual stream, D.
        n_layer: number of residual blocks.
        vocab_size: number of real tokens; the embedding has ``padded_vocab_size`` rows.
        d_state: SSM state size per channel, N; ``None`` takes the layer kind's default (16 for
            Mamba-1, 128 for Mamba-2).
        d_conv: width of the causal depthwise convolution, k.
        expand: expansion factor E; ``d_inner = expand * d_model``.
        dt_rank: rank R of the delta projection, or ``"auto"`` for ``ceil(d_model / 16)``
            (Mamba-1 only, as are ``dt_init`` and ``dt_scale``: set otherwise in a Mamba-2
            config they raise).
        dt_min, dt_max: range (in units of the discretization step) of the log-uniform
            initial delta.
        dt_init: ``"random"`` (uniform in ``+-dt_rank**-0.5 * dt_scale``) or ``"constant"``
            initialization of ``dt_proj.weight``.
        dt_scale: scale of that initialization.
        dt_init_floor: lower clamp of the initial delta.
        conv_bias: whether ``conv1d`` has a bias.
        bias: whether ``in_proj`` and ``out_proj`` have biases.
        pad_vocab_size_multiple: the embedding's rows are rounded up to a multiple of this;
            ``None`` takes the layer kind's default (8 for Mamba-1, 16 for Mamba-2).
        tie_embeddings: whether ``lm_head.weight`` is ``backbone.embedding.weight``.
        rms_norm_eps: epsilon inside every RMSNorm.
        residual_in_fp32: keep the residual stream in float32 whatever the model dtype.
        ssm_cfg: the official nested mixer settings: ``"layer"`` picks the mixer (``"Mamba1"``,
            the default, ``"Mamba2"`` or ``"Mamba3"``; a registered kind of one's own), and any key that layer
            takes (``LAYER_KEYS``) may be given here instead of as a flat field. Stored back as
            ``{"layer": ...}`` alone.
        d_intermediate: width of a gated MLP after each mixer (official ``GatedMLP``, rounded up
            to a multiple of 128); 0 (the default) for none.
        attn_layer_idx: indices of the layers that are attention (``"MHA"``) instead of SSM mixers.
        attn_cfg: keyword arguments of those attention layers (``ATTN_KEYS``: the official ``MHA``'s,
            plus ``max_position_embeddings`` for learned absolute positions); ``num_heads`` is
            required once the model is built. See :class:`minimamba_core.attention.AttentionMixer`
            for the defaults; ``mlp_dim`` and ``d_conv`` other than 0 and ``causal`` other than
            true are refused.

    Mamba-2 fields (``ssm_cfg["layer"] == "Mamba2"``; the official ``Mamba2`` defaults; set to
    anything else in a Mamba-1 config they raise, as the official ``Mamba`` would refuse them):

        headdim: P, the channels of one head; ``nheads = d_inner // headdim`` heads (H).
        ngroups: G, the groups of heads that share one ``B`` and one ``C``; divides ``nheads``.
        chunk_size: Q, the chunk length of the chunked SSD algorithm (any positive int).
        rmsnorm: whether the gated, grouped RMSNorm ``norm`` follows the scan (else ``y * silu(z)``).
        norm_before_gate: ``norm(y) * silu(z)`` instead of ``norm(y * silu(z))``.
        D_has_hdim: ``D`` has one entry per channel ``(d_inner,)`` instead of per head ``(H,)``.
        dt_limit: ``(lo, hi)`` clamp of ``dt`` after the softplus; ``(0, inf)`` for none.
        A_init_range: ``(lo, hi)``; the initial ``-A`` is uniform in it, one value per head.

    Mamba-3 fields (``ssm_cfg["layer"] == "Mamba3"``, which also uses ``headdim``, ``ngroups``,
    ``chunk_size``; the official ``Mamba3`` defaults): ``rope_fraction`` (0.5 or 1.0: the share of
    ``d_state`` whose pairs rotate), ``A_floor`` (``A`` is clamped at ``-A_floor``), ``is_outproj_norm``
    (a gated RMSNorm per head before ``out_proj``), ``is_mimo`` (must be False: MIMO is not
    implemented), ``mimo_rank``. Set in another layer's config they raise.

    Derived (read-only, not constructor arguments): ``d_inner``, ``padded_vocab_size``;
    ``dt_rank``, ``d_state`` and ``pad_vocab_size_multiple`` are replaced by their resolved values.
    So a derived config keeps them: ``dataclasses.replace(config, ssm_cfg={"layer": "Mamba2"})``
    keeps ``d_state`` 16, and ``replace(config, d_model=...)`` keeps the old ``dt_rank``; build a
    new ``MambaConfig`` to get the new kind's defaults. A key given both flat and in ``ssm_cfg``
    must agree, except that a flat value equal to its default counts as not given.

    Raises:
        ValueError: naming the field or key, for non-positive sizes, an unknown ``dt_init``,
            ``dt_min > dt_max``, an unknown key in ``ssm_cfg`` or ``attn_cfg`` (or one of the other
            layer kind), a Mamba-2 field set in a Mamba-1 config, ``nheads * headdim != d_inner``,
            ``ngroups`` not dividing ``nheads``, ``dt_limit`` or ``A_init_range`` out of order, a
            Mamba-1 field (``dt_rank``, ``dt_init``, ``dt_scale``) set in a Mamba-2 config, a key given both
            flat and in ``ssm_cfg`` with different values, attention indices out of range or
            repeated, ``attn_cfg`` without ``attn_layer_idx``, an ``attn_cfg`` value of the wrong
            type or range (``ATTN_VALUE_CHECKS``), heads that do not divide ``d_model`` or each other,
            ``rotary_emb_dim`` larger than a head.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int | None = None  # N; None: the layer kind's default
    d_conv: int = 4  # k, the convolution width
    expand: int = 2  # E
    dt_rank: int | str = "auto"  # R
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    pad_vocab_size_multiple: int | None = None  # None: the layer kind's default
    tie_embeddings: bool = True
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    ssm_cfg: dict = field(default_factory=dict)
    d_intermediate: int = 0
    attn_layer_idx: list = field(default_factory=list)
    attn_cfg: dict = field(default_factory=dict)
    headdim: int = 64  # P (Mamba-2)
    ngroups: int = 1  # G (Mamba-2)
    chunk_size: int = 256  # Q (Mamba-2)
    rmsnorm: bool = True  # (Mamba-2)
    norm_before_gate: bool = False  # (Mamba-2)
    D_has_hdim: bool = False  # (Mamba-2)
    dt_limit: tuple = (0.0, math.inf)  # (Mamba-2)
    A_init_range: tuple = (1.0, 16.0)  # (Mamba-2)
    rope_fraction: float = 0.5  # the share of d_state that rotates (Mamba-3)
    A_floor: float = 1e-4  # A <= -A_floor (Mamba-3)
    is_outproj_norm: bool = False  # gated per-head RMSNorm before out_proj (Mamba-3)
    is_mimo: bool = False  # (Mamba-3; only False: MIMO is not implemented)
    mimo_rank: int = 4  # (Mamba-3 MIMO)
    d_inner: int = field(init=False)  # E * D
    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        self._merge_ssm_cfg()
        self._check_layers()
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {value!r}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        elif isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int) or self.dt_rank <= 0:
            raise ValueError(f"MambaConfig.dt_rank must be a positive int or 'auto', got {self.dt_rank!r}")
        if self.dt_init not in DT_INIT_CHOICES:
            raise ValueError(f"MambaConfig.dt_init must be one of {DT_INIT_CHOICES}, got {self.dt_init!r}")
        for name in ("dt_min", "dt_max", "dt_scale", "dt_init_floor", "rms_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"MambaConfig.{name} must be a positive number, got {value!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"MambaConfig.dt_min ({self.dt_min}) must be <= dt_max ({self.dt_max})")
        for name in ("conv_bias", "bias", "tie_embeddings", "residual_in_fp32", "rmsnorm",
                     "norm_before_gate", "D_has_hdim"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        self.d_inner = self.expand * self.d_model
        self._check_mamba2()
        multiple = self.pad_vocab_size_multiple
        self.padded_vocab_size = math.ceil(self.vocab_size / multiple) * multiple

    def _merge_ssm_cfg(self) -> None:
        """Move ``ssm_cfg``'s keys to the flat fields; fill the layer kind's defaults."""
        if not isinstance(self.ssm_cfg, dict):
            raise ValueError(f"MambaConfig.ssm_cfg must be a dict, got {self.ssm_cfg!r}")
        ssm = dict(self.ssm_cfg)
        layer = ssm.pop("layer", "Mamba1")
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"MambaConfig.ssm_cfg['layer'] must be a layer name such as 'Mamba1', got {layer!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        known = LAYER_KEYS.get(layer, SSM_KEYS)
        for key, value in ssm.items():
            if key in SSM_IGNORED or (key in SSM_NONE_ONLY and value is None):
                continue
            if key not in known:
                why = (f"a {layer} layer does not take it" if key in SSM_KEYS
                       else "no layer takes it" if key not in SSM_NONE_ONLY else "only its default null is supported")
                raise ValueError(f"MambaConfig.ssm_cfg has key {key!r} ({why}); the keys of a {layer} layer are "
                                 f"{['layer', *known]} (and, ignored, {list(SSM_IGNORED)})")
            flat = getattr(self, key)
            if isinstance(value, list):  # a JSON pair, such as dt_limit
                value = tuple(value)
            if flat != defaults[key] and flat != value:
                raise ValueError(f"MambaConfig.{key}={flat!r} and ssm_cfg[{key!r}]={value!r} disagree; give it once")
            setattr(self, key, value)
        for key, value in LAYER_DEFAULTS.get(layer, LAYER_DEFAULTS["Mamba1"]).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.ssm_cfg = {"layer": layer}

    def _check_mamba2(self) -> None:
        """The Mamba-2 fields: sizes, the head and group arithmetic, the two ranges."""
        for name in ("headdim", "ngroups", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {value!r}")
        for name in ("dt_limit", "A_init_range"):
            value = getattr(self, name)
            ok = (isinstance(value, (tuple, list)) and len(value) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
            if not ok:
                raise ValueError(f"MambaConfig.{name} must be a pair of numbers (lo, hi), got {value!r}")
            setattr(self, name, tuple(float(v) for v in value))
        lo, hi = self.dt_limit
        if not 0 <= lo <= hi or lo == math.inf:
            raise ValueError(f"MambaConfig.dt_limit must be (lo, hi) with 0 <= lo <= hi and lo finite, got {self.dt_limit}")
        lo, hi = self.A_init_range
        if not 0 < lo <= hi < math.inf:
            raise ValueError(f"MambaConfig.A_init_range must be (lo, hi) with 0 < lo <= hi, got {self.A_init_range}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed3 = [k for k in MAMBA3_ONLY if getattr(self, k) != defaults[k]]
        if changed3 and self.layer in ("Mamba1", "Mamba2"):
            raise ValueError(f"MambaConfig.{changed3[0]} is a Mamba-3 field, but this config's layer is "
                             f"{self.layer!r}; set ssm_cfg={{'layer': 'Mamba3'}} or drop {changed3}")
        if self.layer == "Mamba3":  # Mamba-1/2 fields it has no use for (dt_rank... are refused below)
            unused = [k for k in SSM_KEYS if k not in MAMBA3_KEYS + ("dt_rank", "dt_init", "dt_scale")
                      and getattr(self, k) != defaults[k]]
            if unused:
                raise ValueError(f"MambaConfig.{unused[0]}={getattr(self, unused[0])!r} has no effect in a 'Mamba3' layer "
                                 f"(no convolution, no dt_limit, A from in_proj); drop {unused}")
        if self.layer not in ("Mamba2", "Mamba3"):
            changed = [k for k in MAMBA2_ONLY if getattr(self, k) != defaults[k]]
            if changed and self.layer == "Mamba1":
                raise ValueError(f"MambaConfig.{changed[0]} is a Mamba-2 field, but this config's layer is "
                                 f"'Mamba1'; set ssm_cfg={{'layer': 'Mamba2'}} or drop {changed}")
            return
        auto_rank = math.ceil(self.d_model / 16)  # what "auto" gives; a replace() from Mamba-1 carries it
        for name, default in (("dt_rank", auto_rank), ("dt_init", "random"), ("dt_scale", 1.0)):
            if getattr(self, name) != default:
                raise ValueError(f"MambaConfig.{name}={getattr(self, name)!r} is a Mamba-1 field, but this config's "
                                 f"layer is {self.layer!r} (it computes dt from in_proj and dt_bias); drop it")
        if self.d_inner % self.headdim != 0:
            raise ValueError(f"MambaConfig.headdim={self.headdim} must divide d_inner={self.d_inner} (expand * "
                             f"d_model): nheads * headdim must equal d_inner")
        if self.nheads % self.ngroups != 0:
            raise ValueError(f"MambaConfig.ngroups={self.ngroups} must divide nheads={self.nheads} "
                             f"(d_inner / headdim): each group of B and C serves nheads / ngroups heads")

        if self.layer == "Mamba3":
            self._check_mamba3()

    def _check_mamba3(self) -> None:
        """The Mamba-3 fields: the rotated share, the floor of -A, SISO only."""
        if self.rope_fraction not in (0.5, 1.0):
            raise ValueError(f"MambaConfig.rope_fraction must be 0.5 or 1.0, got {self.rope_fraction!r}")
        if int(self.d_state * self.rope_fraction) // 2 < 1:
            raise ValueError(f"MambaConfig.d_state={self.d_state} leaves no pair to rotate at "
                             f"rope_fraction={self.rope_fraction}; use d_state >= {int(2 / self.rope_fraction)}")
        if isinstance(self.A_floor, bool) or not isinstance(self.A_floor, (int, float)) or not self.A_floor > 0:
            raise ValueError(f"MambaConfig.A_floor must be a positive number, got {self.A_floor!r}")
        if not isinstance(self.is_outproj_norm, bool) or self.is_mimo is not False:
            raise ValueError(f"MambaConfig.is_mimo must be False (MIMO is not implemented; SISO only) and "
                             f"is_outproj_norm a bool, got {self.is_mimo!r}, {self.is_outproj_norm!r}")

    @property
    def nheads(self) -> int:
        """H, the Mamba-2 heads: ``d_inner // headdim``."""
        return self.d_inner // self.headdim

    def _check_layers(self) -> None:
        """``d_intermediate``, ``attn_layer_idx`` and ``attn_cfg``: types, ranges, known keys."""
        if isinstance(self.d_intermediate, bool) or not isinstance(self.d_intermediate, int) or self.d_intermediate < 0:
            raise ValueError(f"MambaConfig.d_intermediate must be an int >= 0, got {self.d_intermediate!r}")
        idx = self.attn_layer_idx
        if not isinstance(idx, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int) for i in idx):
            raise ValueError(f"MambaConfig.attn_layer_idx must be a list of layer indices, got {idx!r}")
        n_layer = self.n_layer if isinstance(self.n_layer, int) else 0
        bad = [i for i in idx if not 0 <= i < n_layer]
        if bad:
            raise ValueError(f"MambaConfig.attn_layer_idx holds {bad}, outside [0, n_layer={self.n_layer})")
        if len(set(idx)) != len(idx):
            raise ValueError(f"MambaConfig.attn_layer_idx repeats a layer: {list(idx)}")
        self.attn_layer_idx = sorted(idx)
        if not isinstance(self.attn_cfg, dict):
            raise ValueError(f"MambaConfig.attn_cfg must be a dict, got {self.attn_cfg!r}")
        unknown = sorted(set(self.attn_cfg) - set(ATTN_KEYS))
        if unknown:
            raise ValueError(f"MambaConfig.attn_cfg has unknown key(s) {unknown}; known keys are {list(ATTN_KEYS)}")
        if self.attn_cfg and not self.attn_layer_idx:
            raise ValueError("MambaConfig.attn_cfg is set but attn_layer_idx is empty: name the attention layers "
                             "in attn_layer_idx, or drop attn_cfg")
        for key, value in self.attn_cfg.items():
            what, ok = ATTN_VALUE_CHECKS[key]
            if not ok(value):
                raise ValueError(f"MambaConfig.attn_cfg[{key!r}] must be {what}, got {value!r}")
        self._check_attn_heads()

    def _check_attn_heads(self) -> None:
        """Heads that fit: ``num_heads_kv`` divides ``num_heads``; ``d_model`` splits into heads; rotary fits a head."""
        cfg = self.attn_cfg
        heads, kv = cfg.get("num_heads"), cfg.get("num_heads_kv")
        if heads is None:
            return  # required, but only where an attention layer is built (AttentionMixer says so)
        if kv is not None and heads % kv != 0:
            raise ValueError(f"MambaConfig.attn_cfg: num_heads_kv={kv} must divide num_heads={heads} "
                             f"(each key/value head serves num_heads / num_heads_kv query heads)")
        head_dim = cfg.get("head_dim")
        d_model = self.d_model if isinstance(self.d_model, int) else 0
        if head_dim is None and d_model % heads != 0:
            raise ValueError(f"MambaConfig.attn_cfg: num_heads={heads} must divide d_model={self.d_model}, "
                             f"or give head_dim")
        head_dim = head_dim or d_model // heads
        if cfg.get("rotary_emb_dim", 0) > head_dim:
            raise ValueError(f"MambaConfig.attn_cfg: rotary_emb_dim={cfg['rotary_emb_dim']} is larger than a "
                             f"head (head_dim={head_dim})")

    @property
    def layer(self) -> str:
        """The SSM mixer's kind, ``ssm_cfg["layer"]``."""
        return self.ssm_cfg["layer"]

    def layer_kind(self, layer_idx: int) -> str:
        """The kind of layer ``layer_idx``: ``"MHA"`` where ``attn_layer_idx`` says so, else :attr:`layer`."""
        return ATTENTION if layer_idx in self.attn_layer_idx else self.layer

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as a flat, JSON-serializable dict (derived fields left out).

        A field of another generation (``MAMBA2_ONLY``, ``MAMBA3_ONLY``) that this layer kind does
        not take is left out while it holds its default, so a Mamba-1 config's dict is what it was
        before Mamba-2 existed; every field a layer takes is kept (``from_dict(to_dict())`` is the
        same config). Pairs such as ``dt_limit`` become lists; its default upper bound is
        ``math.inf`` (Python's ``json`` writes it as ``Infinity`` and reads it back)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        skip = [k for k in MAMBA2_ONLY + MAMBA3_ONLY
                if k not in LAYER_KEYS.get(self.layer, ()) and getattr(self, k) == defaults[k]]
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self) if f.init and f.name not in skip}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MambaConfig":
        """Build from :meth:`to_dict`'s output.

        Raises:
            ValueError: for a key that is not a field (a typo must not be silently dropped).
        """
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MambaConfig field(s) {unknown}; known fields are {sorted(known)} (a "
                             f"checkpoint's config.json, official or Hugging Face, is read by mm.load_pretrained)")
        return cls(**data)
