"""Mamba-2 checkpoints' ``config.json`` in both layouts <-> :class:`MambaConfig`, checked against the tensors.

The Mamba-2 sibling of ``layouts.py`` (which keeps what both generations share: file names,
the vocabulary keys, the generic checks of layer count, width, bias flags and rows).

* **official** (``state-spaces/mamba2-130m`` ... ``-2.7b``): the Mamba-1 keys, with
  ``ssm_cfg = {"layer": "Mamba2", ...}``. The released configs carry no geometry in ``ssm_cfg``,
  so every key left out takes the default of the official module's signature (``Mamba2.__init__``,
  ``mamba_ssm/modules/mamba2.py``, state-spaces/mamba commit 60dadf2): ``OFFICIAL2_DEFAULTS``.
  A top-level ``pad_vocab_size_multiple`` left out is 8 (``config_mamba.py``), though the
  released configs say 16.
* **Hugging Face** (``Mamba2ForCausalLM``, ``model_type: "mamba2"``; transformers 5.24.0,
  ``models/mamba2/configuration_mamba2.py`` and ``modeling_mamba2.py``). A key left out takes
  transformers' default, and those are **Mamba-Codestral-7B's** (``n_groups`` 8, ``num_heads``
  128, ``hidden_size`` 4096, ``vocab_size`` 32768, ``tie_word_embeddings`` false), not the
  released small models': ``HF2_DEFAULTS`` lists them all and every field is read from the file
  or from there, never from our defaults. transformers' mixer has no switch for the gated norm,
  the norm's order or ``D``'s shape: it is always ``rmsnorm=True, norm_before_gate=False,
  D_has_hdim=False``, has no MLP and no attention layers, so a config with anything else cannot
  be saved in this layout (``hf2_config_json`` raises). ``A_init_range`` (initialization only)
  has no key there and is not stored.

``dt_limit`` / ``time_step_limit``: a JSON list, left out when it is ``(0, inf)`` (both readers'
default), since ``Infinity`` is not standard JSON. Otherwise an infinite end is written as each
reader expects: transformers 5.x writes and reads ``{"__float__": "Infinity"}``
(``PreTrainedConfig._encode_special_floats``; its own ``Mamba2ForCausalLM.save_pretrained``
writes ``time_step_limit: [0.0, {"__float__": "Infinity"}]``), ``mamba_ssm`` reads config.json
with Python's ``json``, which reads the non-standard ``Infinity``. Reading accepts both forms.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..config import MAMBA2_KEYS, SSM_IGNORED, SSM_NONE_ONLY, MambaConfig
from .layouts import (MULTIPLE_KEY, OFFICIAL_NAMES, VOCAB_KEY, CheckpointError, compare_config, fields_from_hf,
                      fields_from_official, hf_config_json, hf_vocab_fields, infer_from_tensors,
                      official_config_json, setting_text)

# The official Mamba2 module's defaults (mamba_ssm/modules/mamba2.py, commit 60dadf2).
OFFICIAL2_DEFAULTS = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256,
                      "rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False, "dt_min": 0.001,
                      "dt_max": 0.1, "dt_init_floor": 1e-4, "dt_limit": (0.0, math.inf),
                      "A_init_range": (1.0, 16.0), "conv_bias": True, "bias": False}
# transformers 5.24.0 Mamba2Config's defaults (Mamba-Codestral-7B's), for the keys we read.
HF2_DEFAULTS = {"num_heads": 128, "head_dim": 64, "vocab_size": 32768, "hidden_size": 4096, "state_size": 128,
                "num_hidden_layers": 64, "layer_norm_epsilon": 1e-5, "expand": 2, "conv_kernel": 4,
                "n_groups": 8, "use_bias": False, "use_conv_bias": True, "hidden_act": "silu",
                "residual_in_fp32": True, "time_step_min": 0.001, "time_step_max": 0.1,
                "time_step_floor": 1e-4, "time_step_limit": (0.0, math.inf), "chunk_size": 256,
                "tie_word_embeddings": False}
# Our field -> its Hugging Face key (num_heads is derived here: nheads = d_inner / headdim).
HF2_NAMES = {"d_model": "hidden_size", "n_layer": "num_hidden_layers", "vocab_size": "vocab_size",
             "d_state": "state_size", "d_conv": "conv_kernel", "expand": "expand", "headdim": "head_dim",
             "ngroups": "n_groups", "chunk_size": "chunk_size", "dt_min": "time_step_min",
             "dt_max": "time_step_max", "dt_init_floor": "time_step_floor", "dt_limit": "time_step_limit",
             "conv_bias": "use_conv_bias", "bias": "use_bias", "tie_embeddings": "tie_word_embeddings",
             "rms_norm_eps": "layer_norm_epsilon", "residual_in_fp32": "residual_in_fp32"}
OFFICIAL2_NAMES = {**OFFICIAL_NAMES, **{f: f"ssm_cfg.{f}" for f in MAMBA2_KEYS}}
# What transformers' Mamba2Mixer always is, as our fields (modeling_mamba2.py, transformers 5.24.0).
HF2_FIXED = {"rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False, "d_intermediate": 0}
NO_LIMIT = (0.0, math.inf)
MIXER = "backbone.layers.0.mixer."


INF_TAG = {"__float__": "Infinity"}  # transformers' standard-JSON spelling of inf


def _json_pair(value: tuple, tagged: bool = False) -> list:
    """A pair as a JSON list; with ``tagged``, inf as transformers spells it."""
    return [INF_TAG if tagged and v == math.inf else float(v) for v in value]


def _read_pair(value: Any) -> Any:
    """A JSON pair as a tuple, transformers' ``{"__float__": "Infinity"}`` decoded; anything else as is."""
    if not isinstance(value, list):
        return value
    return tuple(math.inf if v == INF_TAG else v for v in value)


def _positive_int(raw: dict[str, Any], key: str, value: Any, path: Path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        left_out = " (left out of config.json: transformers' default)" if key not in raw else ""
        raise CheckpointError(f"{path}: {key} must be a positive int, got {value!r}{left_out}; fix config.json")


# ---------------------------------------------------------------------------------------------
# config.json -> MambaConfig fields
# ---------------------------------------------------------------------------------------------

def config_generation(raw: dict[str, Any], layout: str, path: Path) -> str:
    """``"Mamba2"`` for ``model_type: "mamba2"`` (HF) or ``ssm_cfg.layer: "Mamba2"`` (official), else ``"Mamba1"``.

    Raises:
        CheckpointError: an official ``ssm_cfg`` that is not a JSON object, or whose ``layer`` is
            neither ``"Mamba1"`` nor ``"Mamba2"``. (``detect_layout`` refuses other ``model_type`` s.)
    """
    if layout == "hf":
        return "Mamba2" if raw.get("model_type") == "mamba2" else "Mamba1"
    ssm = raw.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise CheckpointError(f"{path}: ssm_cfg must be a JSON object, got {ssm!r}")
    if ssm.get("layer", "Mamba1") not in ("Mamba1", "Mamba2"):
        raise CheckpointError(f"{path}: ssm_cfg.layer is {ssm['layer']!r}; only Mamba-1 ('Mamba1') and "
                              f"Mamba-2 ('Mamba2') layers are supported")
    return ssm.get("layer", "Mamba1")


def fields_from_official2(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """Official Mamba-2 config -> (MambaConfig kwargs, bias flags the file states explicitly).

    Raises:
        CheckpointError: an ``ssm_cfg`` key a Mamba2 layer does not take (``d_ssm`` and
            ``conv_init`` only as null), ``rms_norm`` false (LayerNorm blocks), attention layers.
    """
    ssm = dict(raw["ssm_cfg"])
    for key, value in ssm.items():
        ok = (key in MAMBA2_KEYS or key in SSM_IGNORED or key == "layer"
              or (key in SSM_NONE_ONLY and value is None))
        if not ok:
            why = "only null is supported" if key in SSM_NONE_ONLY else "a Mamba2 layer does not take it"
            raise CheckpointError(f"{path}: ssm_cfg has key {key!r} ({why}); remove it from ssm_cfg "
                                  f"(the keys of a Mamba2 layer are {list(MAMBA2_KEYS)})")
    if raw.get("rms_norm", True) is not True:
        raise CheckpointError(f"{path}: rms_norm is {raw['rms_norm']!r}; only RMSNorm models (rms_norm: true) "
                              f"are supported, LayerNorm ones are not")
    if raw.get("attn_layer_idx"):
        raise CheckpointError(f"{path}: attn_layer_idx is {raw['attn_layer_idx']!r}; hybrid models with "
                              f"attention layers (mamba2attn) are not supported")
    fields = {f: raw[f] for f in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple",
                                  "tie_embeddings", "residual_in_fp32", "d_intermediate") if raw.get(f) is not None}
    fields.setdefault("pad_vocab_size_multiple", 8)  # mamba_ssm's MambaConfig default
    fields.update({k: ssm.get(k, default) for k, default in OFFICIAL2_DEFAULTS.items()})
    for pair in ("dt_limit", "A_init_range"):
        fields[pair] = _read_pair(fields[pair])
    fields["ssm_cfg"] = {"layer": "Mamba2"}
    return fields, {f: ssm[f] for f in ("bias", "conv_bias") if f in ssm}


def fields_from_hf2(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """``Mamba2ForCausalLM`` config -> (MambaConfig kwargs, bias flags the file states explicitly).

    A key left out takes transformers' default (``HF2_DEFAULTS``, Codestral's), never ours.

    Raises:
        CheckpointError: ``hidden_act`` not ``"silu"``; ``rms_norm`` present and not true;
            ``num_heads * head_dim != expand * hidden_size`` (naming the four keys, and which were
            left out); a non-positive size.
    """
    value = {key: raw.get(key, default) for key, default in HF2_DEFAULTS.items()}
    if value["hidden_act"] != "silu":
        raise CheckpointError(f"{path}: hidden_act is {value['hidden_act']!r}; Mamba-2 uses 'silu': set "
                              f"\"hidden_act\": \"silu\" (or use another loader)")
    if raw.get("rms_norm", True) is not True:
        raise CheckpointError(f"{path}: rms_norm is {raw['rms_norm']!r}; Mamba2ForCausalLM always uses the "
                              f"gated RMSNorm, so only \"rms_norm\": true can be loaded")
    heads = ("num_heads", "head_dim", "expand", "hidden_size")
    for key in heads:
        _positive_int(raw, key, value[key], path)
    if value["num_heads"] * value["head_dim"] != value["expand"] * value["hidden_size"]:
        left_out = [k for k in heads if k not in raw]
        note = (f"; {left_out} are left out of config.json, so they take transformers' defaults "
                f"(Mamba-Codestral's: {', '.join(f'{k} {HF2_DEFAULTS[k]}' for k in left_out)})" if left_out else "")
        raise CheckpointError(
            f"{path}: num_heads * head_dim = {value['num_heads']} * {value['head_dim']} must equal expand * "
            f"hidden_size = {value['expand']} * {value['hidden_size']} (each head holds head_dim of the "
            f"d_inner channels){note}: set \"num_heads\" and \"head_dim\" to the checkpoint's values")
    fields = {ours: value[theirs] for ours, theirs in HF2_NAMES.items()}
    fields["dt_limit"] = _read_pair(fields["dt_limit"])
    fields.update(hf_vocab_fields(raw, path), ssm_cfg={"layer": "Mamba2"})
    return fields, {ours: raw[HF2_NAMES[ours]] for ours in ("bias", "conv_bias") if HF2_NAMES[ours] in raw}


# ---------------------------------------------------------------------------------------------
# MambaConfig -> config.json
# ---------------------------------------------------------------------------------------------

def official2_config_json(config: MambaConfig) -> dict[str, Any]:
    """The ``config.json`` of ``mamba_ssm``'s ``MambaLMHeadModel`` with Mamba2 layers (commit 60dadf2).

    ``ssm_cfg`` holds ``layer: "Mamba2"`` and every Mamba2 keyword (``MAMBA2_KEYS``; no Mamba-1 key
    such as ``dt_rank``); pairs as JSON lists; ``dt_limit`` left out when it is ``(0, inf)``.
    """
    ssm = {"layer": "Mamba2", **{k: getattr(config, k) for k in MAMBA2_KEYS}}
    ssm["A_init_range"] = _json_pair(config.A_init_range)
    if tuple(config.dt_limit) == NO_LIMIT:
        del ssm["dt_limit"]
    else:
        ssm["dt_limit"] = _json_pair(config.dt_limit)
    return {**official_config_json(config), "ssm_cfg": ssm}


def hf2_config_json(config: MambaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The ``config.json`` of transformers' ``Mamba2ForCausalLM``; every key written explicitly.

    ``vocab_size`` is the padded row count (with ``VOCAB_KEY``/``MULTIPLE_KEY`` when padding
    added rows, as for Mamba-1); ``time_step_limit`` is left out when it is ``(0, inf)``.

    Raises:
        ValueError: naming the field, for what transformers' Mamba-2 cannot hold (``HF2_FIXED``:
            ``rmsnorm=False``, ``norm_before_gate=True``, ``D_has_hdim=True``, ``d_intermediate > 0``),
            or attention layers; each suggests ``layout="official"``.
    """
    for field, fixed in HF2_FIXED.items():
        if getattr(config, field) != fixed:
            raise ValueError(f"the Hugging Face layout cannot hold {field}={getattr(config, field)!r}: "
                             f"transformers' Mamba2ForCausalLM always has {field}={fixed!r}; save with "
                             f"layout='official'")
    if config.attn_layer_idx:
        raise ValueError(f"the Hugging Face layout cannot hold attention layers (attn_layer_idx="
                         f"{config.attn_layer_idx}); save with layout='official'")
    out = {theirs: getattr(config, ours) for ours, theirs in HF2_NAMES.items()}
    out.update(architectures=["Mamba2ForCausalLM"], model_type="mamba2", hidden_act="silu",
               num_heads=config.nheads, vocab_size=config.padded_vocab_size, rms_norm=True,
               rescale_prenorm_residual=False, use_cache=True, dtype=str(dtype).removeprefix("torch."))
    if tuple(config.dt_limit) == NO_LIMIT:
        del out["time_step_limit"]
    else:
        out["time_step_limit"] = _json_pair(config.dt_limit, tagged=True)
    if config.vocab_size != config.padded_vocab_size:
        out.update({VOCAB_KEY: config.vocab_size, MULTIPLE_KEY: config.pad_vocab_size_multiple})
    return out


# ---------------------------------------------------------------------------------------------
# checking tensors against the config
# ---------------------------------------------------------------------------------------------

def weights_generation(tensors: dict[str, torch.Tensor]) -> tuple[str | None, str]:
    """Which generation layer 0's mixer tensors are, and the evidence; ``(None, "")`` if they don't say.

    Mamba-1: ``x_proj``/``dt_proj`` or a 2-D ``A_log (d_inner, d_state)``; Mamba-2: ``dt_bias`` or
    a 1-D ``A_log (nheads,)``.
    """
    a_log = tensors.get(MIXER + "A_log")
    a_text = f"{MIXER}A_log has shape {tuple(a_log.shape)}" if a_log is not None else ""
    mamba1 = [k for k in ("x_proj.weight", "dt_proj.weight") if MIXER + k in tensors]
    if mamba1 or (a_log is not None and a_log.dim() == 2):
        return "Mamba1", ", ".join([a_text] * bool(a_text) + [f"the weights hold {MIXER}{k}" for k in mamba1])
    if MIXER + "dt_bias" in tensors or (a_log is not None and a_log.dim() == 1):
        return "Mamba2", ", ".join([a_text] * bool(a_text) + [f"the weights hold {MIXER}dt_bias"]
                                   * (MIXER + "dt_bias" in tensors))
    return None, ""


def generation_problem(generation: str, layout: str, tensors: dict[str, torch.Tensor]) -> str | None:
    """A message when the config is of one generation and the weights of the other, else None."""
    found, evidence = weights_generation(tensors)
    if found is None or found == generation:
        return None
    name = {"Mamba1": "Mamba-1", "Mamba2": "Mamba-2"}
    if layout == "hf":
        said = f"model_type {'mamba2' if generation == 'Mamba2' else 'mamba'!r}"
        fix = (f"set \"model_type\": \"{'mamba2' if found == 'Mamba2' else 'mamba'}\" with that generation's "
               f"keys ({'num_heads, head_dim, n_groups, ...' if found == 'Mamba2' else 'intermediate_size, time_step_rank, ...'})")
    else:
        said = f"ssm_cfg.layer {generation!r}"
        fix = f"set \"layer\": \"{found}\" inside \"ssm_cfg\" (with that layer's keys)"
    return (f"the weights are a {name[found]} model's ({evidence}) but config.json describes a {name[generation]} "
            f"model ({said}): {fix}, or use the config.json written with these weights (Mamba-1 and Mamba-2 "
            f"weights do not convert into each other)")


def infer_from_tensors2(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """What Mamba-2 tensors say about the config: field -> (value, evidence).

    The generic ``n_layer, d_model, rows, d_conv, bias, conv_bias`` (:func:`infer_from_tensors`),
    then ``nheads`` (``A_log (H,)``), ``d_inner`` (``out_proj.weight (d_model, d_inner)``),
    ``gn = ngroups * d_state`` (``conv1d.weight (d_inner + 2 G N, 1, d_conv)``; the tensors never
    tell ``G`` from ``N``), ``D_has_hdim`` (``D`` of ``d_inner`` entries) and ``rmsnorm`` (a ``norm.weight``).
    """
    out = {k: v for k, v in infer_from_tensors(tensors).items()
           if k in ("n_layer", "d_model", "rows", "d_conv", "bias", "conv_bias")}

    def shape(name):
        return tuple(tensors[MIXER + name].shape) if MIXER + name in tensors else None

    a_log, out_proj, conv, D = shape("A_log"), shape("out_proj.weight"), shape("conv1d.weight"), shape("D")
    if a_log and len(a_log) == 1:
        out["nheads"] = (a_log[0], f"{MIXER}A_log has shape {a_log}")
    if out_proj and len(out_proj) == 2:
        d_inner = out_proj[1]
        out["d_inner"] = (d_inner, f"{MIXER}out_proj.weight has shape {out_proj}")
        if conv and len(conv) == 3 and conv[0] > d_inner and (conv[0] - d_inner) % 2 == 0:
            out["gn"] = ((conv[0] - d_inner) // 2, f"{MIXER}conv1d.weight has shape {conv}")
        if D and len(D) == 1 and "nheads" in out and d_inner != out["nheads"][0] and D[0] in (d_inner, out["nheads"][0]):
            out["D_has_hdim"] = (D[0] == d_inner, f"{MIXER}D has shape {D}")
    if a_log:  # a Mamba-2 mixer's norm is there or not
        has = MIXER + "norm.weight" in tensors
        out["rmsnorm"] = (has, f"the weights {'hold' if has else 'hold no'} {MIXER}norm.weight")
    return out


def compare_config2(fields: dict[str, Any], explicit: dict[str, bool], inferred: dict[str, tuple[Any, str]],
                    layout: str, raw: dict[str, Any]) -> list[str]:
    """Disagreements between a Mamba-2 config.json and the tensors, each with its fix (key as the file names it)."""
    problems = compare_config(fields, explicit, inferred, layout)  # n_layer, d_model, d_conv, biases, rows
    names = HF2_NAMES if layout == "hf" else OFFICIAL2_NAMES

    def said(field):  # "n_groups=8 (left out: transformers' default)"
        key = names[field]
        note = " (left out of config.json: transformers' default)" if layout == "hf" and key not in raw else ""
        return f"{key}={fields[field]!r}{note}"

    def fix(field, value):
        return f"set {setting_text(names[field], value)} in config.json"

    d_model = inferred.get("d_model", (fields["d_model"],))[0]
    if "d_inner" in inferred:
        d_inner, evidence = inferred["d_inner"]
        if fields["expand"] * d_model != d_inner:
            todo = fix("expand", d_inner // d_model) if d_inner % d_model == 0 else "use the weights it was written for"
            problems.append(f"config.json says {said('expand')}, i.e. d_inner = {fields['expand'] * d_model}, but "
                            f"{evidence}: {todo}")
            return problems  # heads and groups follow from d_inner
        if "nheads" in inferred:
            H, evidence = inferred["nheads"]
            if layout == "hf" and raw.get("num_heads", HF2_DEFAULTS["num_heads"]) != H:
                left = " (left out of config.json: transformers' default)" if "num_heads" not in raw else ""
                problems.append(f"config.json says num_heads={raw.get('num_heads', HF2_DEFAULTS['num_heads'])!r}"
                                f"{left} but {evidence}: set \"num_heads\": {H} and \"head_dim\": {d_inner // H} "
                                f"in config.json")
            elif layout == "official" and d_inner % H == 0 and fields["headdim"] * H != d_inner:
                problems.append(f"config.json says {said('headdim')}, i.e. nheads = d_inner / headdim = "
                                f"{d_inner // fields['headdim']}, but {evidence}: {fix('headdim', d_inner // H)}")
    if "gn" in inferred:
        gn, evidence = inferred["gn"]
        G, N = fields["ngroups"], fields["d_state"]
        if G * N != gn:
            todo = (fix("ngroups", gn // N) if gn % N == 0 else fix("d_state", gn // G) if gn % G == 0
                    else f"set {names['ngroups']} and {names['d_state']} so that their product is {gn}")
            problems.append(f"config.json says {said('ngroups')} and {said('d_state')}, so conv1d would have "
                            f"d_inner + 2 * {G} * {N} channels, but {evidence}: {todo} (ngroups * d_state "
                            f"must be {gn})")
    for field in ("D_has_hdim", "rmsnorm"):
        stated = fields.get(field, HF2_FIXED[field])  # the Hugging Face layout has no key for it
        if field in inferred and stated != inferred[field][0]:
            value, evidence = inferred[field]
            todo = (fix(field, value) if layout == "official" else
                    f"transformers' Mamba2ForCausalLM always has {field}={HF2_FIXED[field]}, so this is no "
                    f"Mamba2ForCausalLM checkpoint: write an official-layout config.json for it")
            problems.append(f"config.json gives {field}={stated!r} but {evidence}: {todo}")
    return problems


# (layout, generation) -> config.json reader (raw, path) -> (fields, explicit bias flags), and
# writer (config, dtype) -> config.json; the generation is config_generation's, or config.layer.
READERS = {("hf", "Mamba1"): fields_from_hf, ("official", "Mamba1"): fields_from_official,
           ("hf", "Mamba2"): fields_from_hf2, ("official", "Mamba2"): fields_from_official2}
WRITERS = {("hf", "Mamba1"): hf_config_json, ("official", "Mamba1"): lambda config, _: official_config_json(config),
           ("hf", "Mamba2"): hf2_config_json, ("official", "Mamba2"): lambda config, _: official2_config_json(config)}
