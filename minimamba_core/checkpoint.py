"""Checkpoints: load and save the official (state-spaces) and the Hugging Face layouts.

Two folder layouts hold the same Mamba weights under nearly the same names:

* **official** (``state-spaces/mamba-130m`` ... ``-2.8b``, written by ``mamba_ssm``'s
  ``MambaLMHeadModel.save_pretrained``): ``config.json`` with ``d_model, n_layer, vocab_size,
  ssm_cfg{d_state, d_conv, expand, dt_rank, ...}, rms_norm, residual_in_fp32, fused_add_norm,
  pad_vocab_size_multiple, tie_embeddings`` and ``pytorch_model.bin``, a plain state dict
  whose keys are exactly our module names (``backbone.embedding.weight``, ...,
  ``lm_head.weight``). The embedding has ``vocab_size`` rounded up to a multiple of
  ``pad_vocab_size_multiple`` rows (50277 -> 50280 for every released size). Source:
  ``mamba_ssm/models/mixer_seq_simple.py`` and ``config_mamba.py``, state-spaces/mamba
  commit 60dadf2.
* **Hugging Face** (``state-spaces/mamba-130m-hf``, written by ``MambaForCausalLM``):
  ``config.json`` with ``hidden_size, num_hidden_layers, state_size, conv_kernel, expand,
  time_step_rank, use_bias, use_conv_bias, layer_norm_epsilon, vocab_size, ...`` and
  ``model.safetensors`` (or shards plus ``model.safetensors.index.json``, or
  ``pytorch_model.bin``). One key differs: ``backbone.embeddings.weight`` (plural); a tied
  ``lm_head.weight`` is left out of the file. The embedding has exactly ``vocab_size`` rows,
  which is why ``mamba-130m-hf`` says ``vocab_size: 50280``. Source: transformers 5.24.0,
  ``models/mamba/configuration_mamba.py`` and ``modeling_mamba.py``.

How the vocabulary maps, so that logits agree column for column: an official folder gives
``MambaConfig(vocab_size=50277, pad_vocab_size_multiple=8)`` (50280 rows, ids >= 50277 never
sampled); a Hugging Face folder gives ``MambaConfig(vocab_size=V, pad_vocab_size_multiple=1)``
with ``V`` = its ``vocab_size`` = its rows. Saving in the Hugging Face layout writes
``vocab_size = padded_vocab_size`` (all rows), plus ``minimamba_vocab_size`` and
``minimamba_pad_vocab_size_multiple`` when padding added rows, which loading reads back; the official layout writes ``vocab_size`` and
``pad_vocab_size_multiple`` as they are. Logits always have ``padded_vocab_size`` columns,
the same number as the other implementation's.

Numerics: transformers' ``MambaRMSNorm`` casts the normalized activations to the input dtype
before multiplying by the weight, ours multiplies in float32 and casts after; in float32 the two
are the same, in bf16/fp16 they differ by one rounding. Logits agree with ``MambaForCausalLM``
to a relative error below 1e-5 in float32 (tests/test_checkpoint.py).

Loading checks everything before a weight is used (names, shapes, bias flags, vocabulary
padding, the config against the tensors, truncated or foreign files) and raises one
:class:`CheckpointError` that names each key and the fix; there is never a half-loaded
model. ``.bin`` files are read only with ``torch.load(..., weights_only=True)``. Saving
writes a temporary folder beside the target and renames it: a crash leaves no folder that
loads. Built in notebook ``10_checkpoints_and_generation``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import MambaConfig
from .mixer import MambaMixer
from .model import MambaLM

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
# files that save_pretrained may replace in an existing folder
_CHECKPOINT_FILE = re.compile(r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map)\.json"
                              r"|model(-\d+-of-\d+)?\.safetensors(\.index\.json)?"
                              r"|pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?")

# Extra keys of a Hugging Face config.json written by save_pretrained when the rows are padded.
VOCAB_KEY, MULTIPLE_KEY = "minimamba_vocab_size", "minimamba_pad_vocab_size_multiple"


def _padded(vocab: int, multiple: int) -> int:
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
_SSM_FIELDS = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
               "dt_init_floor", "conv_bias", "bias")
OFFICIAL_NAMES = {"d_model": "d_model", "n_layer": "n_layer", "vocab_size": "vocab_size",
                  "pad_vocab_size_multiple": "pad_vocab_size_multiple",
                  "tie_embeddings": "tie_embeddings", "residual_in_fp32": "residual_in_fp32",
                  **{f: f"ssm_cfg.{f}" for f in _SSM_FIELDS}}
_SSM_IGNORED = {"use_fast_path", "layer_idx", "device", "dtype", "layer"}  # no effect on the math
_HF_EMBEDDING, _EMBEDDING = "backbone.embeddings.weight", "backbone.embedding.weight"


class CheckpointError(ValueError):
    """A folder that cannot be loaded as a Mamba checkpoint; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------
# config.json <-> MambaConfig
# ---------------------------------------------------------------------------------------------

def _read_config(folder: Path) -> dict[str, Any]:
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


def _detect_layout(raw: dict[str, Any], path: Path) -> str:
    model_type = raw.get("model_type")
    if model_type not in (None, "mamba"):
        raise CheckpointError(f"{path}: model_type is {model_type!r}; only Mamba-1 checkpoints "
                              f"(model_type 'mamba') are supported")
    if "hidden_size" in raw and "num_hidden_layers" in raw:
        return "hf"
    if "d_model" in raw and "n_layer" in raw:
        return "official"
    raise CheckpointError(f"{path} is not a Mamba config: it needs either 'd_model' and 'n_layer' "
                          f"(official layout) or 'hidden_size' and 'num_hidden_layers' (Hugging Face "
                          f"layout); its keys are {sorted(raw)[:15]}")


def _fields_from_official(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """Official config -> (MambaConfig kwargs, bias flags the file states explicitly)."""
    ssm = raw.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise CheckpointError(f"{path}: ssm_cfg must be a JSON object, got {ssm!r}")
    if ssm.get("layer", "Mamba1") != "Mamba1":
        raise CheckpointError(f"{path}: ssm_cfg.layer is {ssm['layer']!r}; only Mamba-1 layers are supported")
    unknown = sorted(set(ssm) - set(_SSM_FIELDS) - _SSM_IGNORED)
    if unknown:
        raise CheckpointError(f"{path}: ssm_cfg has key(s) {unknown} that a Mamba-1 mixer does not take; "
                              f"known keys are {sorted(_SSM_FIELDS)}")
    if raw.get("rms_norm", True) is not True:
        raise CheckpointError(f"{path}: rms_norm is {raw['rms_norm']!r}; only RMSNorm models (rms_norm: true) "
                              f"are supported, LayerNorm ones are not")
    if raw.get("d_intermediate", 0) not in (0, None):
        raise CheckpointError(f"{path}: d_intermediate is {raw['d_intermediate']!r}; blocks with an MLP "
                              f"are not supported (d_intermediate must be 0)")
    if raw.get("attn_layer_idx"):
        raise CheckpointError(f"{path}: attn_layer_idx is {raw['attn_layer_idx']!r}; hybrid models with "
                              f"attention layers are not supported")
    fields = {f: raw[f] for f in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple",
                                  "tie_embeddings", "residual_in_fp32") if f in raw}
    fields.setdefault("pad_vocab_size_multiple", 8)  # the official default
    fields.update({f: ssm[f] for f in _SSM_FIELDS if f in ssm})
    explicit = {f: ssm[f] for f in ("bias", "conv_bias") if f in ssm}
    return fields, explicit


def _fields_from_hf(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, bool]]:
    """Hugging Face config -> (MambaConfig kwargs, bias flags the file states explicitly)."""
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: hidden_act is {raw['hidden_act']!r}; Mamba uses 'silu'")
    fields = {ours: raw[theirs] for ours, theirs in HF_NAMES.items() if theirs in raw}
    fields["pad_vocab_size_multiple"] = 1  # Hugging Face stores exactly vocab_size rows
    if VOCAB_KEY in raw:  # written by our save_pretrained: the real vocabulary inside the padded rows
        vocab, multiple = raw[VOCAB_KEY], raw.get(MULTIPLE_KEY)
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (vocab, multiple))
        if not ok or _padded(vocab, multiple) != raw.get("vocab_size"):
            raise CheckpointError(f"{path}: {VOCAB_KEY}={vocab!r} padded to a multiple of {MULTIPLE_KEY}="
                                  f"{multiple!r} must give vocab_size={raw.get('vocab_size')!r}; fix or "
                                  f"remove those two keys")
        fields.update(vocab_size=vocab, pad_vocab_size_multiple=multiple)
    if "intermediate_size" in raw:
        fields["expand"] = _expand_from_intermediate(raw, path)
    explicit = {ours: raw[HF_NAMES[ours]] for ours in ("bias", "conv_bias") if HF_NAMES[ours] in raw}
    return fields, explicit


def _expand_from_intermediate(raw: dict[str, Any], path: Path) -> Any:
    """``expand`` of a Hugging Face config, from ``intermediate_size`` (what transformers builds from).

    transformers' ``MambaMixer`` sizes every layer by ``intermediate_size`` and ignores ``expand``
    (``modeling_mamba.py``, transformers 5.24), so a folder may say ``expand: 2`` beside
    ``intermediate_size == hidden_size``; its own test configuration writes exactly that. We take
    ``expand = intermediate_size / hidden_size`` and refuse only when that is not a whole number.
    """
    inner, hidden = raw["intermediate_size"], raw.get("hidden_size")
    whole = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (inner, hidden))
    if not whole or inner % hidden != 0:
        raise CheckpointError(f"{path}: intermediate_size={inner!r} is not a whole multiple of hidden_size="
                              f"{hidden!r}; a Mamba layer needs d_inner = expand * d_model with an integer "
                              f"expand: fix one of those two keys in config.json")
    return inner // hidden


def _official_config(config: MambaConfig) -> dict[str, Any]:
    """The ``config.json`` that ``mamba_ssm``'s ``MambaConfig(**json)`` accepts (commit 60dadf2)."""
    return {"d_model": config.d_model, "d_intermediate": 0, "n_layer": config.n_layer,
            "vocab_size": config.vocab_size,
            "ssm_cfg": {f: getattr(config, f) for f in _SSM_FIELDS},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
            "residual_in_fp32": config.residual_in_fp32, "fused_add_norm": True,
            "pad_vocab_size_multiple": config.pad_vocab_size_multiple,
            "tie_embeddings": config.tie_embeddings}


def _hf_config(config: MambaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The ``config.json`` of ``MambaForCausalLM``; ``vocab_size`` is the padded row count.

    When padding added rows, the real vocabulary and the multiple are kept under two extra keys
    (``VOCAB_KEY``, ``MULTIPLE_KEY``; transformers keeps unknown keys and ignores them), so that
    loading gives back the same ``MambaConfig`` and never samples a padded row."""
    out = {theirs: getattr(config, ours) for ours, theirs in HF_NAMES.items()}
    out.update(architectures=["MambaForCausalLM"], model_type="mamba", hidden_act="silu",
               vocab_size=config.padded_vocab_size, intermediate_size=config.d_inner,
               rescale_prenorm_residual=False, use_cache=True, dtype=str(dtype).removeprefix("torch."))
    if config.vocab_size != config.padded_vocab_size:
        out.update({VOCAB_KEY: config.vocab_size, MULTIPLE_KEY: config.pad_vocab_size_multiple})
    return out


# ---------------------------------------------------------------------------------------------
# reading tensors
# ---------------------------------------------------------------------------------------------

def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); it is truncated or "
                              f"corrupted: download or save it again") from None


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} holds objects other than tensors ({first}); pickled files are read "
                              f"only with torch.load(weights_only=True): save model.state_dict() "
                              f"instead") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch file ({str(err).strip()[:200]}); it is "
                              f"truncated or corrupted: download or save it again") from None
    if isinstance(data, dict) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        wrapped = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(data.get(k), dict)]
        hint = f" (it wraps one under {wrapped[0]!r}: save that dict itself)" if wrapped else ""
        raise CheckpointError(f"{path} is not a state dict: some values are not tensors{hint}")
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise CheckpointError(f"{path} is not a state dict (a dict of name -> tensor): it holds a "
                              f"{type(data).__name__}")
    return data


def _read_sharded(folder: Path, index_name: str, reader) -> dict[str, torch.Tensor]:
    index_path = folder / index_name
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        assert isinstance(weight_map, dict)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{index_path} is not a shard index (a JSON object with a 'weight_map'); "
                              f"download it again") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to shard file names "
                              f"(strings); download it again")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        claimed = sorted(k for k, v in weight_map.items() if v == shard)
        if not (folder / shard).is_file():
            raise CheckpointError(f"{index_name} puts {claimed[:3]}{'...' if len(claimed) > 3 else ''} in "
                                  f"{shard}, which is missing from {folder}; download that shard")
        part = reader(folder / shard)
        absent = [k for k in claimed if k not in part]
        if absent:
            raise CheckpointError(f"{index_name} says {absent[0]!r} is in {shard}, but that shard does "
                                  f"not hold it; the shards and the index come from different saves")
        stray = sorted(k for k in part if weight_map.get(k) != shard)
        if stray:  # a stale copy must never override the tensor the index names
            raise CheckpointError(f"{shard} holds {stray[0]!r}, which {index_name} "
                                  f"{'puts in ' + weight_map[stray[0]] if stray[0] in weight_map else 'does not list'}; "
                                  f"the shards and the index come from different saves")
        tensors.update(part)
    return tensors


def _read_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of the folder on the CPU, and the name of the file(s) they came from."""
    if (folder / SAFETENSORS_INDEX).is_file():
        return _read_sharded(folder, SAFETENSORS_INDEX, _read_safetensors), SAFETENSORS_INDEX
    if (folder / SAFETENSORS_FILE).is_file():
        return _read_safetensors(folder / SAFETENSORS_FILE), SAFETENSORS_FILE
    if (folder / BIN_INDEX).is_file():
        return _read_sharded(folder, BIN_INDEX, _read_bin), BIN_INDEX
    if (folder / BIN_FILE).is_file():
        return _read_bin(folder / BIN_FILE), BIN_FILE
    found = sorted(p.name for p in folder.iterdir())[:12]
    raise CheckpointError(f"{folder} has a {CONFIG_FILE} but no weights: expected {SAFETENSORS_FILE}, "
                          f"{SAFETENSORS_INDEX} with its shards, or {BIN_FILE}; found {found}")


# ---------------------------------------------------------------------------------------------
# checking tensors against the config
# ---------------------------------------------------------------------------------------------

def _infer_from_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """What the tensors say about the config: field -> (value, evidence)."""
    out: dict[str, tuple[Any, str]] = {}

    def shape(key):
        return tuple(tensors[key].shape) if key in tensors else None

    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"backbone\.layers\.(\d+)\.", k))}
    if layers:
        out["n_layer"] = (max(layers) + 1, f"the weights hold backbone.layers.0 ... backbone.layers.{max(layers)}")
    emb_key = _EMBEDDING if _EMBEDDING in tensors else _HF_EMBEDDING  # as the file names it
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


def _setting(name: str, value: Any) -> str:
    """How to write ``name = value`` in config.json (``ssm_cfg.x`` lives inside ``ssm_cfg``)."""
    if name.startswith("ssm_cfg."):
        return f'"{name.removeprefix("ssm_cfg.")}": {json.dumps(value)} inside "ssm_cfg"'
    return f'"{name}": {json.dumps(value)}'


def _compare_config(fields: dict[str, Any], explicit: dict[str, bool], inferred: dict[str, tuple[Any, str]],
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
        stated = fields.get(field, MambaConfig.__dataclass_fields__[field].default)
        if field == "dt_rank" and stated == "auto" and isinstance(fields.get("d_model"), int):
            stated = math.ceil(fields["d_model"] / 16)
        if stated != value and field == "expand" and layout == "hf" and by_intermediate:
            d_model = fields["d_model"]  # expand came from intermediate_size: name that key
            problems.append(f"config.json says intermediate_size={stated * d_model!r} but {evidence}: set "
                            f"\"intermediate_size\": {value * d_model} in config.json (or use the weights it "
                            f"was written for)")
        elif stated != value:
            problems.append(f"config.json says {names[field]}={stated!r} but {evidence}: set "
                            f"{_setting(names[field], value)} in config.json (or use the weights it was "
                            f"written for)")
    for field, value in explicit.items():
        has, evidence = inferred[field]
        if value != has:
            problems.append(f"config.json says {names[field]}={json.dumps(value)} but {evidence}: set "
                            f"{_setting(names[field], has)} in config.json")
    if "rows" in inferred and isinstance(fields.get("vocab_size"), int):
        rows, evidence = inferred["rows"]
        vocab, multiple = fields["vocab_size"], fields.get("pad_vocab_size_multiple", 8)
        if layout == "hf" and isinstance(multiple, int) and _padded(vocab, multiple) != rows:
            problems.append(f"config.json says vocab_size={vocab} but {evidence}; a Hugging Face checkpoint "
                            f"stores exactly vocab_size rows (mamba-130m-hf: 50280): set \"vocab_size\": {rows}")
        elif layout == "official" and isinstance(multiple, int) and multiple > 0:
            padded = _padded(vocab, multiple)
            if padded != rows:
                fix = (f"set \"pad_vocab_size_multiple\": 1 (the rows are not padded)" if rows >= vocab
                       else f"set \"vocab_size\": {rows}")
                problems.append(f"config.json says vocab_size={vocab} padded to a multiple of "
                                f"pad_vocab_size_multiple={multiple}, i.e. {padded} rows, but {evidence}: {fix}")
    return problems


def _compare_state(model_shapes: dict[str, tuple], tensors: dict[str, torch.Tensor],
                   shown: dict[str, str]) -> list[str]:
    """Missing / unexpected keys, wrong shapes, non-float tensors; each named as in the file."""
    problems = []

    def show(key):
        return shown.get(key, key)
    missing = sorted(set(model_shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(model_shapes))
    for key in missing[:8]:
        problems.append(f"missing key {show(key)!r} (expected shape {model_shapes[key]}): the file lacks it; "
                        f"was it saved from a different model or truncated?")
    for key in unexpected[:8]:
        hint = (" (that is the Hugging Face name: this config.json is in the official layout)"
                if key == _HF_EMBEDDING else "")
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


# ---------------------------------------------------------------------------------------------
# finding the folder (local, or the Hugging Face Hub)
# ---------------------------------------------------------------------------------------------

def _hub_download(repo_id: str) -> str:
    """Download ``repo_id`` with ``huggingface_hub.snapshot_download`` (tests replace this call)."""
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and downloading it from the Hugging Face Hub needs "
            f"huggingface_hub (pip install huggingface_hub); or download the folder elsewhere and pass "
            f"its local path") from None
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_PATTERNS)
        if not any((Path(folder) / f).is_file() for f in (SAFETENSORS_FILE, SAFETENSORS_INDEX)):
            folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FALLBACK_PATTERNS)
        return folder
    except Exception as err:  # network down, offline mode, unknown or gated repository, ...
        raise CheckpointError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: "
            f"{str(err).strip()[:200]}); check the name and the network, or download the folder "
            f"elsewhere and pass its local path") from None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A local checkpoint folder for ``path``: the folder itself, or a Hub download of ``owner/name``.

    Raises:
        CheckpointError: ``path`` is neither an existing folder nor a Hub repository id that
        could be downloaded (the message says how to point at a local folder).
        TypeError: ``path`` is not a string or path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path or a Hub id such as 'state-spaces/mamba-130m', "
                        f"got {type(path).__name__}")
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise CheckpointError(f"{local} is a file; pass the folder that holds config.json and the weights")
    text = os.fspath(path)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not text.startswith((".", "~")):
        return Path(_hub_download(text))
    raise CheckpointError(f"no folder {local}: pass a checkpoint folder, or a Hub id such as "
                          f"'state-spaces/mamba-130m'")


# ---------------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------------

def load_pretrained(path: str | os.PathLike, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> MambaLM:
    """Load a Mamba checkpoint folder, official or Hugging Face layout, into a :class:`MambaLM`.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors`` (single or sharded with
            its index) or ``pytorch_model.bin``; or a Hub id like ``"state-spaces/mamba-130m"``,
            downloaded when ``huggingface_hub`` and a network are there.
        device: where the weights go (default: the CPU).
        dtype: a floating dtype for the weights (default: the dtype stored for the embedding);
            ``A_log`` and ``D`` stay float32 when it is bfloat16 or float16, as in
            ``model.to(dtype)``.

    Returns:
        The model in ``eval()`` mode. Bias flags come from the tensors present; logits have
        ``padded_vocab_size`` columns (see the module docstring for the vocabulary mapping).

    Raises:
        CheckpointError (a ``ValueError``): no such folder; not a checkpoint; unreadable,
        truncated or foreign weight files; a config that disagrees with the tensors
        (sizes, layer count, bias flags, vocabulary padding); missing or unexpected keys;
        wrong shapes. Raised before any weight is used, naming each key and the fix.
        TypeError: ``dtype`` is not a floating ``torch.dtype``.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    folder = resolve_checkpoint(path)
    raw = _read_config(folder)
    layout = _detect_layout(raw, folder / CONFIG_FILE)
    fields, explicit = (_fields_from_hf if layout == "hf" else _fields_from_official)(raw, folder / CONFIG_FILE)
    tensors, source = _read_tensors(folder)
    where = f"cannot load {folder} ({layout} layout, {source})"
    inferred = _infer_from_tensors(tensors)
    problems = _compare_config(fields, explicit, inferred, layout, by_intermediate="intermediate_size" in raw)
    if problems:
        raise CheckpointError(where + ":\n  - " + "\n  - ".join(problems))
    shown = {}  # our name -> the file's name, for messages
    if layout == "hf" and _EMBEDDING not in tensors:
        shown[_EMBEDDING] = _HF_EMBEDDING
        if _HF_EMBEDDING in tensors:
            tensors[_EMBEDDING] = tensors.pop(_HF_EMBEDDING)  # the one name that differs
    fields.update(bias=inferred["bias"][0], conv_bias=inferred["conv_bias"][0])  # decided by the tensors
    try:
        config = MambaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: config.json holds a bad value: {err}") from None
    if config.tie_embeddings and "lm_head.weight" not in tensors and _EMBEDDING in tensors:
        tensors["lm_head.weight"] = tensors[_EMBEDDING]  # a tied head is often left out of the file
    with torch.device("meta"):  # shapes and names only, no memory, no initialization cost
        shapes = {k: tuple(v.shape) for k, v in MambaLM(config).state_dict().items()}
    problems = _compare_state(shapes, tensors, shown)
    if (not problems and config.tie_embeddings
            and not torch.equal(tensors["lm_head.weight"], tensors[_EMBEDDING])):
        name = "tie_word_embeddings" if layout == "hf" else "tie_embeddings"
        problems.append(f"'lm_head.weight' differs from the embedding although config.json ties them "
                        f"({name} is true): set \"{name}\": false in config.json")
    if problems:
        raise CheckpointError(where + ":\n  - " + "\n  - ".join(problems))
    dtype = dtype or tensors[_EMBEDDING].dtype
    with torch.device("meta"):
        model = MambaLM(config)
    model.load_state_dict(tensors, strict=True, assign=True)  # the stored tensors, on the CPU
    if config.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
    # one conversion per tensor, as it moves; MambaMixer._apply keeps A_log and D float32 in a
    # half-precision model, exactly as model.to(dtype) does after loading
    model.to(device=device, dtype=dtype)
    assert not any(p.is_meta for p in model.parameters()), "a parameter was left on the meta device"
    return model.eval()


def _same_tensor(t: torch.Tensor) -> tuple:
    """A key shared by tensors that view the same memory the same way (a tied head and its embedding)."""
    return (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())


def _state_for_saving(model: MambaLM) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU, contiguous; a tied head stays one shared tensor."""
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for key, t in model.state_dict().items():
        if _same_tensor(t) not in copies:
            copies[_same_tensor(t)] = t.detach().to("cpu").contiguous()
        out[key] = copies[_same_tensor(t)]
    return out


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _readable_by_umask(folder: Path) -> None:
    """Give the folder and its files the modes a plain mkdir/open would (mkdtemp makes 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _fsync_folder(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def save_pretrained(model: MambaLM, directory: str | os.PathLike, layout: str = "hf",
                    tokenizer: Any = None) -> Path:
    """Write ``model`` (and its tokenizer) as a checkpoint folder, atomically.

    Args:
        model: the :class:`MambaLM` to save (any device and dtype; saved as is).
        directory: the folder to create; an existing one is replaced only when it holds
            nothing but checkpoint files (config, weights, tokenizer).
        layout: ``"hf"`` -> ``config.json`` + ``model.safetensors``, loadable by
            ``MambaForCausalLM.from_pretrained``; ``"official"`` -> ``config.json`` +
            ``pytorch_model.bin`` (a plain state dict), loadable by ``mamba_ssm``.
        tokenizer: a ``tokenizers.Tokenizer``, written as ``tokenizer.json``; or None.

    Returns:
        The folder's path. Everything is written to a temporary folder beside it, flushed to
        disk and renamed into place, so a crash mid-save never leaves a folder that loads.

    Raises:
        TypeError: ``model`` is not a :class:`MambaLM`, ``tokenizer`` not a ``tokenizers.Tokenizer``.
        ValueError: an unknown ``layout``; a model whose mixers are not ``MambaMixer``; a target
        that is a file, holds other files or a ``config.json`` of something else; an
        ``rms_norm_eps`` other than 1e-5 in the official layout (its config has no field for it).
    """
    from tokenizers import Tokenizer

    if not isinstance(model, MambaLM):
        raise TypeError(f"model must be a MambaLM, got {type(model).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer or None, got {type(tokenizer).__name__}")
    other = [type(layer.mixer).__name__ for layer in model.backbone.layers if type(layer.mixer) is not MambaMixer]
    if other:
        raise ValueError(f"save_pretrained writes Mamba checkpoints; this model's mixers are {other[0]}, "
                         f"which no Mamba loader reads (for the LTI task models use tasks.save_task_model)")
    config = model.config
    if layout == "official" and config.rms_norm_eps != 1e-5:
        raise ValueError(f"the official layout has no field for rms_norm_eps={config.rms_norm_eps} "
                         f"(mamba_ssm always uses 1e-5); save with layout='hf'")
    target = Path(directory).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target} is a file; save_pretrained needs a folder path")
        foreign = sorted(p.name for p in target.iterdir() if not _CHECKPOINT_FILE.fullmatch(p.name))
        if foreign:
            raise ValueError(f"refusing to replace {target}: it holds files that are not a checkpoint's "
                             f"({foreign[:5]}); choose another folder or remove them")
        if (target / CONFIG_FILE).exists():
            try:
                _detect_layout(_read_config(target), target / CONFIG_FILE)
            except CheckpointError as err:
                raise ValueError(f"refusing to replace {target}: its {CONFIG_FILE} is not a Mamba "
                                 f"checkpoint's ({err}); choose another folder or remove it") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        state = _state_for_saving(model)
        if layout == "hf":
            state[_HF_EMBEDDING] = state.pop(_EMBEDDING)
            if config.tie_embeddings:
                del state["lm_head.weight"]  # transformers ties it back on load
            save_file(state, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
            _write_json(_hf_config(config, model.backbone.embedding.weight.dtype), tmp / CONFIG_FILE)
        else:
            torch.save(state, tmp / BIN_FILE)
            _write_json(_official_config(config), tmp / CONFIG_FILE)
        if tokenizer is not None:
            tokenizer.save(str(tmp / TOKENIZER_FILE))
        _readable_by_umask(tmp)
        _fsync_folder(tmp)
        if target.exists():  # swap: old -> backup, new -> target, drop backup
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, backup / "old")
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
