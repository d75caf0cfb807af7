"""The two checkpoint layouts' ``config.json``, and how each must agree with the tensors.

``checkpoint.py`` (its module docstring describes both layouts) reads and writes the folders;
this module translates their ``config.json`` to and from :class:`MambaConfig` and compares a
config with the tensors it came with, so that every disagreement is named with its fix before
a weight is used. Sources: ``mamba_ssm/models/config_mamba.py`` (state-spaces/mamba commit
60dadf2) and transformers 5.24.0, ``models/mamba/configuration_mamba.py``. These are the Mamba-1
configs (and what both generations share: the files, the vocabulary keys, the generic checks);
the Mamba-2 ones are in ``layouts2.py``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from ..config import MambaConfig

LAYOUTS = ("hf", "official")
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILE = "tokenizer.json"
# what a Hub download fetches: configs and tokenizer, and safetensors weights; the pickled
# .bin weights only when the repository has no safetensors (state-spaces/mamba-130m has none)
HUB_PATTERNS = ["*.json", "*.safetensors"]
HUB_FALLBACK_PATTERNS = ["*.json", "pytorch_model*.bin"]
# Extra keys of a Hugging Face config.json written by save_pretrained when the rows are padded.
VOCAB_KEY, MULTIPLE_KEY = "minimamba_vocab_size", "minimamba_pad_vocab_size_multiple"


def padded_rows(vocab: int, multiple: int) -> int:
    """Embedding rows for ``vocab`` tokens padded to a multiple (as ``MambaConfig.padded_vocab_size``)."""
    return math.ceil(vocab / multiple) * multiple


# Our field -> its name in each layout's config.json (official: dotted inside ssm_cfg).
HF_NAMES = {"d_model": "hidden_size", "n_layer": "num_hidden_layers", "vocab_size": "vocab_size",
            "d_state": "state_size", "d_conv": "conv_kernel", "expand": "expand",
            "dt_rank": "time_step_rank", "dt_min": "time_step_min", "dt_max": "time_step_max",
            "dt_init": "time_step_init_scheme", "dt_scale": "time_step_scale",
            "dt_init_floor": "time_step_floor", "conv_bias": "use_conv_bias", "bias": "use_bias",
            "tie_embeddings": "tie_word_embeddings", "rms_norm_eps": "layer_norm_epsilon",
            "residual_in_fp32": "residual_in_fp32"}
SSM_FIELDS = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
               "dt_init_floor", "conv_bias", "bias")
OFFICIAL_NAMES = {"d_model": "d_model", "n_layer": "n_layer", "vocab_size": "vocab_size",
                  "pad_vocab_size_multiple": "pad_vocab_size_multiple",
                  "tie_embeddings": "tie_embeddings", "residual_in_fp32": "residual_in_fp32",
                  **{f: f"ssm_cfg.{f}" for f in SSM_FIELDS}}
SSM_IGNORED = {"use_fast_path", "layer_idx", "device", "dtype", "layer"}  # no effect on the math
HF_EMBEDDING, EMBEDDING = "backbone.embeddings.weight", "backbone.embedding.weight"


DEFAULTS = MambaConfig(d_model=1, n_layer=1, vocab_size=1)  # what a config.json leaves out means


class CheckpointError(ValueError):
    """A folder that cannot be loaded as a Mamba checkpoint; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------
# config.json <-> MambaConfig
# ---------------------------------------------------------------------------------------------

def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise CheckpointError(f"{folder} is not a checkpoint folder: it has no {CONFIG_FILE} "
                              f"(found {found}); point at the folder that holds config.json and the weights")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); it is truncated or not a config "
                              f"file: download the checkpoint again") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def detect_layout(raw: dict[str, Any], path: Path) -> str:
    model_type = raw.get("model_type")
    if model_type not in (None, "mamba", "mamba2"):
        raise CheckpointError(f"{path}: model_type is {model_type!r}; only Mamba-1 ('mamba') and Mamba-2 "
                              f"('mamba2') checkpoints are supported")
    if "hidden_size" in raw and "num_hidden_layers" in raw:
        return "hf"
    if "d_model" in raw and "n_layer" in raw:
        return "official"
    raise CheckpointError(f"{path} is not a Mamba config: it needs either 'd_model' and 'n_layer' "
                          f"(official layout) or 'hidden_size' and 'num_hidden_layers' (Hugging Face "
                          f"layout); its keys are {sorted(raw)[:15]}")


def fields_from_official(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """Official config -> (MambaConfig kwargs, bias flags the file states explicitly)."""
    ssm = raw.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise CheckpointError(f"{path}: ssm_cfg must be a JSON object, got {ssm!r}")
    if ssm.get("layer", "Mamba1") != "Mamba1":  # Mamba2 goes to layouts2.fields_from_official2
        raise CheckpointError(f"{path}: ssm_cfg.layer is {ssm['layer']!r}; only Mamba-1 ('Mamba1') and "
                              f"Mamba-2 ('Mamba2') layers are supported")
    unknown = sorted(set(ssm) - set(SSM_FIELDS) - SSM_IGNORED)
    if unknown:
        raise CheckpointError(f"{path}: ssm_cfg has key(s) {unknown} that a Mamba-1 mixer does not take; "
                              f"known keys are {sorted(SSM_FIELDS)}")
    if raw.get("rms_norm", True) is not True:
        raise CheckpointError(f"{path}: rms_norm is {raw['rms_norm']!r}; only RMSNorm models (rms_norm: true) "
                              f"are supported, LayerNorm ones are not")
    if raw.get("attn_layer_idx"):
        raise CheckpointError(f"{path}: attn_layer_idx is {raw['attn_layer_idx']!r}; hybrid models with "
                              f"attention layers are not supported")
    fields = {f: raw[f] for f in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple",
                                  "tie_embeddings", "residual_in_fp32", "d_intermediate") if f in raw}
    if fields.get("d_intermediate") is None:
        fields.pop("d_intermediate", None)
    fields.setdefault("pad_vocab_size_multiple", 8)  # the official default
    fields.update({f: ssm[f] for f in SSM_FIELDS if f in ssm})
    explicit = {f: ssm[f] for f in ("bias", "conv_bias") if f in ssm}
    return fields, explicit


def fields_from_hf(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """Hugging Face config -> (MambaConfig kwargs, bias flags the file states explicitly)."""
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: hidden_act is {raw['hidden_act']!r}; Mamba uses 'silu'")
    fields = {ours: raw[theirs] for ours, theirs in HF_NAMES.items() if theirs in raw}
    fields.update(hf_vocab_fields(raw, path))
    if "intermediate_size" in raw:
        fields["expand"] = expand_from_intermediate(raw, path)
    explicit = {ours: raw[HF_NAMES[ours]] for ours in ("bias", "conv_bias") if HF_NAMES[ours] in raw}
    return fields, explicit


def hf_vocab_fields(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``vocab_size`` and ``pad_vocab_size_multiple`` of a Hugging Face config (either generation).

    Hugging Face stores exactly ``vocab_size`` rows (multiple 1), unless our ``save_pretrained``
    kept the real vocabulary inside padded rows under ``VOCAB_KEY`` and ``MULTIPLE_KEY``.
    """
    if VOCAB_KEY not in raw:
        return {"pad_vocab_size_multiple": 1}
    vocab, multiple = raw[VOCAB_KEY], raw.get(MULTIPLE_KEY)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (vocab, multiple))
    if not ok or padded_rows(vocab, multiple) != raw.get("vocab_size"):
        raise CheckpointError(f"{path}: {VOCAB_KEY}={vocab!r} padded to a multiple of {MULTIPLE_KEY}="
                              f"{multiple!r} must give vocab_size={raw.get('vocab_size')!r}; fix or "
                              f"remove those two keys")
    return {"vocab_size": vocab, "pad_vocab_size_multiple": multiple}


def expand_from_intermediate(raw: dict[str, Any], path: Path) -> Any:
    """``expand`` of a Hugging Face config, from ``intermediate_size`` (what transformers builds from).

    transformers' ``MambaMixer`` sizes every layer by ``intermediate_size`` and ignores ``expand``
    (``modeling_mamba.py``, transformers 5.24), so a folder may say ``expand: 2`` beside
    ``intermediate_size == hidden_size``; its own test configuration writes exactly that. We take
    ``expand = intermediate_size / hidden_size`` and refuse only when that is not a whole number.
    """
    inner, hidden = raw["intermediate_size"], raw.get("hidden_size")
    for key, value in (("intermediate_size", inner), ("hidden_size", hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{path}: {key} must be a positive int, got {value!r}; fix config.json")
    if inner % hidden != 0:
        raise CheckpointError(f"{path}: intermediate_size={inner!r} is not a whole multiple of hidden_size="
                              f"{hidden!r}; a Mamba layer needs d_inner = expand * d_model with an integer "
                              f"expand: fix one of those two keys in config.json")
    return inner // hidden


def official_config_json(config: MambaConfig) -> dict[str, Any]:
    """The ``config.json`` that ``mamba_ssm``'s ``MambaConfig(**json)`` accepts (commit 60dadf2)."""
    return {"d_model": config.d_model, "d_intermediate": config.d_intermediate, "n_layer": config.n_layer,
            "vocab_size": config.vocab_size,
            "ssm_cfg": {"layer": config.layer, **{f: getattr(config, f) for f in SSM_FIELDS}},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
            "residual_in_fp32": config.residual_in_fp32, "fused_add_norm": True,
            "pad_vocab_size_multiple": config.pad_vocab_size_multiple,
            "tie_embeddings": config.tie_embeddings}


def hf_config_json(config: MambaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The ``config.json`` of ``MambaForCausalLM``; ``vocab_size`` is the padded row count.

    When padding added rows, the real vocabulary and the multiple are kept under two extra keys
    (``VOCAB_KEY``, ``MULTIPLE_KEY``; transformers keeps unknown keys and ignores them), so that
    loading gives back the same ``MambaConfig`` and never samples a padded row.

    Raises:
        ValueError: ``d_intermediate > 0`` (``MambaForCausalLM`` has no MLP; the official layout has).
    """
    if config.d_intermediate > 0:
        raise ValueError(f"the Hugging Face layout has no keys for the gated MLP of d_intermediate="
                         f"{config.d_intermediate} (MambaForCausalLM has none); save with layout='official'")
    out = {theirs: getattr(config, ours) for ours, theirs in HF_NAMES.items()}
    out.update(architectures=["MambaForCausalLM"], model_type="mamba", hidden_act="silu",
               vocab_size=config.padded_vocab_size, intermediate_size=config.d_inner,
               rescale_prenorm_residual=False, use_cache=True, dtype=str(dtype).removeprefix("torch."))
    if config.vocab_size != config.padded_vocab_size:
        out.update({VOCAB_KEY: config.vocab_size, MULTIPLE_KEY: config.pad_vocab_size_multiple})
    return out


# ---------------------------------------------------------------------------------------------
# checking tensors against the config
# ---------------------------------------------------------------------------------------------

def infer_from_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """What the tensors say about the config: field -> (value, evidence)."""
    out: dict[str, tuple[Any, str]] = {}

    def shape(key):
        return tuple(tensors[key].shape) if key in tensors else None

    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"backbone\.layers\.(\d+)\.", k))}
    if layers:
        out["n_layer"] = (max(layers) + 1, f"the weights hold backbone.layers.0 ... backbone.layers.{max(layers)}")
    emb_key = EMBEDDING if EMBEDDING in tensors else HF_EMBEDDING  # as the file names it
    emb = shape(emb_key)
    if emb and len(emb) == 2:
        out["d_model"] = (emb[1], f"{emb_key} has shape {emb}")
        out["rows"] = (emb[0], f"{emb_key} has shape {emb}")
    p = "backbone.layers.0.mixer."
    in_proj, conv, dt_proj, a_log = (shape(p + s) for s in ("in_proj.weight", "conv1d.weight",
                                                           "dt_proj.weight", "A_log"))
    if in_proj and len(in_proj) == 2 and in_proj[0] % (2 * in_proj[1]) == 0:
        out["expand"] = (in_proj[0] // (2 * in_proj[1]), f"{p}in_proj.weight has shape {in_proj}")
    if conv and len(conv) == 3:
        out["d_conv"] = (conv[2], f"{p}conv1d.weight has shape {conv}")
    if dt_proj and len(dt_proj) == 2:
        out["dt_rank"] = (dt_proj[1], f"{p}dt_proj.weight has shape {dt_proj}")
    if a_log and len(a_log) == 2:
        out["d_state"] = (a_log[1], f"{p}A_log has shape {a_log}")
    for field, suffixes in (("bias", ("in_proj.bias", "out_proj.bias")), ("conv_bias", ("conv1d.bias",))):
        present = sorted(k for k in tensors if k.startswith("backbone.layers.") and k.endswith(suffixes))
        out[field] = (bool(present), f"the weights hold {present[0]}" if present else
                      f"the weights hold no {' / '.join(suffixes)} tensors")
    return out


def setting_text(name: str, value: Any) -> str:
    """How to write ``name = value`` in config.json (``ssm_cfg.x`` lives inside ``ssm_cfg``)."""
    if name.startswith("ssm_cfg."):
        return f'"{name.removeprefix("ssm_cfg.")}": {json.dumps(value)} inside "ssm_cfg"'
    return f'"{name}": {json.dumps(value)}'


def compare_config(fields: dict[str, Any], explicit: dict[str, bool], inferred: dict[str, tuple[Any, str]],
                    layout: str, by_intermediate: bool = False) -> list[str]:
    """Disagreements between config.json and the tensors, each with its fix.

    ``by_intermediate``: a Hugging Face ``expand`` was derived from ``intermediate_size``, so a
    disagreement names that key.
    """
    names = HF_NAMES if layout == "hf" else OFFICIAL_NAMES
    problems = []
    for field in ("n_layer", "d_model", "expand", "d_conv", "dt_rank", "d_state"):
        if field not in inferred:
            continue
        value, evidence = inferred[field]
        # left out: the default; dt_rank's is "auto" (DEFAULTS, built with d_model=1, resolved it to 1)
        stated = fields.get(field, "auto" if field == "dt_rank" else getattr(DEFAULTS, field))
        if field == "dt_rank" and stated == "auto" and isinstance(fields.get("d_model"), int):
            stated = math.ceil(fields["d_model"] / 16)
        if field == "expand" and layout == "hf" and by_intermediate:
            # expand came from intermediate_size: compare that key, with each side's own d_model
            # (a wrong hidden_size is reported on its own, above)
            stated_inner = stated * fields["d_model"]
            true_inner = value * inferred.get("d_model", (fields["d_model"],))[0]
            if stated_inner != true_inner:
                problems.append(f"config.json says intermediate_size={stated_inner!r} but {evidence}: set "
                                f"\"intermediate_size\": {true_inner} in config.json (or use the weights it "
                                f"was written for)")
        elif stated != value:
            problems.append(f"config.json says {names[field]}={stated!r} but {evidence}: set "
                            f"{setting_text(names[field], value)} in config.json (or use the weights it was "
                            f"written for)")
    for field, value in explicit.items():
        has, evidence = inferred[field]
        if value != has:
            problems.append(f"config.json says {names[field]}={json.dumps(value)} but {evidence}: set "
                            f"{setting_text(names[field], has)} in config.json")
    if "rows" in inferred and isinstance(fields.get("vocab_size"), int):
        rows, evidence = inferred["rows"]
        vocab, multiple = fields["vocab_size"], fields.get("pad_vocab_size_multiple", 8)
        if layout == "hf" and isinstance(multiple, int) and padded_rows(vocab, multiple) != rows:
            problems.append(f"config.json says vocab_size={vocab} but {evidence}; a Hugging Face checkpoint "
                            f"stores exactly vocab_size rows (mamba-130m-hf: 50280): set \"vocab_size\": {rows}")
        elif layout == "official" and isinstance(multiple, int) and multiple > 0:
            padded = padded_rows(vocab, multiple)
            if padded != rows:
                fix = ("set \"pad_vocab_size_multiple\": 1 (the rows are not padded)" if rows >= vocab
                       else f"set \"vocab_size\": {rows}")
                problems.append(f"config.json says vocab_size={vocab} padded to a multiple of "
                                f"pad_vocab_size_multiple={multiple}, i.e. {padded} rows, but {evidence}: {fix}")
    return problems


def compare_state(model_shapes: dict[str, tuple], tensors: dict[str, torch.Tensor],
                   shown: dict[str, str]) -> list[str]:
    """Missing / unexpected keys, wrong shapes, non-float tensors; each named as in the file."""
    problems = []

    def show(key):
        return shown.get(key, key)
    missing = sorted(set(model_shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(model_shapes))
    for key in missing[:8]:
        hint = ("; a head tied to the embedding is left out of the file: if this model's is, set "
                "\"tie_word_embeddings\": true (Hugging Face layout; transformers' Mamba2Config makes it false "
                "when the key is left out) or \"tie_embeddings\": true (official layout)"
                if key == "lm_head.weight" else "; was it saved from a different model or truncated?")
        problems.append(f"missing key {show(key)!r} (expected shape {model_shapes[key]}): the file lacks it{hint}")
    for key in unexpected[:8]:
        hint = (" (that is the Hugging Face name: this config.json is in the official layout)"
                if key == HF_EMBEDDING else "")
        problems.append(f"unexpected key {key!r}{hint}: no parameter of this model has that name; "
                        f"check that config.json belongs to these weights")
    for name, keys in (("missing", missing), ("unexpected", unexpected)):
        if len(keys) > 8:
            problems.append(f"... and {len(keys) - 8} more {name} keys")
    for key in sorted(set(model_shapes) & set(tensors)):
        t = tensors[key]
        if tuple(t.shape) != model_shapes[key]:
            problems.append(f"{show(key)!r} has shape {tuple(t.shape)} in the file but the config gives "
                            f"{model_shapes[key]}: fix config.json to match the weights")
        elif not t.is_floating_point():
            problems.append(f"{show(key)!r} has dtype {t.dtype}; weights must be floating point")
    return problems
