"""Checkpoints: load and save the official (state-spaces) and the Hugging Face layouts, Mamba-1 and Mamba-2.

Two folder layouts hold the same Mamba weights under nearly the same names:

* **official** (``state-spaces/mamba-130m`` ... ``-2.8b``, ``state-spaces/mamba2-130m`` ...
  ``-2.7b``, written by ``mamba_ssm``'s ``MambaLMHeadModel.save_pretrained``): ``config.json``
  with ``d_model, n_layer, vocab_size, ssm_cfg{layer, d_state, d_conv, expand, ...}, rms_norm,
  residual_in_fp32, fused_add_norm, pad_vocab_size_multiple, tie_embeddings`` and
  ``pytorch_model.bin``, a plain state dict whose keys are exactly our module names
  (``backbone.embedding.weight``, ..., ``lm_head.weight``). ``ssm_cfg.layer`` is ``"Mamba2"``
  for Mamba-2 (left out: Mamba-1). The embedding has ``vocab_size`` rounded up to a multiple of
  ``pad_vocab_size_multiple`` rows (50277 -> 50280 for every released Mamba-1, 50288 for
  Mamba-2). Source: ``mamba_ssm/models/mixer_seq_simple.py`` and ``config_mamba.py``,
  state-spaces/mamba commit 60dadf2.
* **Hugging Face** (``state-spaces/mamba-130m-hf``, written by ``MambaForCausalLM``; Mamba-2:
  ``Mamba2ForCausalLM``, ``model_type: "mamba2"``): ``config.json`` with ``hidden_size,
  num_hidden_layers, state_size, conv_kernel, expand, use_bias, use_conv_bias,
  layer_norm_epsilon, vocab_size, ...`` (Mamba-2 adds ``num_heads, head_dim, n_groups,
  chunk_size, time_step_limit``) and ``model.safetensors`` (or shards plus
  ``model.safetensors.index.json``, or ``pytorch_model.bin``). One key differs:
  ``backbone.embeddings.weight`` (plural); a tied ``lm_head.weight`` is left out. The embedding
  has exactly ``vocab_size`` rows (``mamba-130m-hf``: 50280). Source: transformers 5.24.0,
  ``models/mamba/``, ``models/mamba2/``. Mamba-2 defaults and limits: ``layouts2.py``.

How the vocabulary maps, so that logits agree column for column: an official folder gives
``MambaConfig(vocab_size=50277, pad_vocab_size_multiple=8)`` (50280 rows, ids >= 50277 never
sampled); a Hugging Face folder gives ``MambaConfig(vocab_size=V, pad_vocab_size_multiple=1)``
with ``V`` = its ``vocab_size`` = its rows. Saving in the Hugging Face layout writes
``vocab_size = padded_vocab_size`` (all rows), plus ``minimamba_vocab_size`` and
``minimamba_pad_vocab_size_multiple`` when padding added rows, which loading reads back. Logits
always have ``padded_vocab_size`` columns, the same number as the other implementation's.

Numerics: transformers' RMSNorm casts to the input dtype before the weight, ours after (the same
in float32, one rounding apart in bf16/fp16). Logits agree with ``MambaForCausalLM`` and
``Mamba2ForCausalLM`` to a relative error below 1e-5 in float32 (tests/test_interop_checkpoint.py,
tests/test_interop_mamba2.py).

Loading checks everything before a weight is used (the generation of the weights against the
config's, names, shapes, bias flags, vocabulary padding, the config against the tensors,
truncated or foreign files) and raises one :class:`CheckpointError` that names each key and the
fix; there is never a half-loaded model. ``.bin`` files are read only with
``torch.load(..., weights_only=True)``. Saving writes a temporary folder beside the target and
renames it: a crash leaves no folder that loads. Built in notebook ``10_checkpoints_and_generation``.
"""

from __future__ import annotations

import json
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

from ..checks import check_device
from ..config import MambaConfig
from ..model import MIXERS, MambaLM
from .layouts import (BIN_FILE, BIN_INDEX, CONFIG_FILE, CheckpointError, EMBEDDING, HF_EMBEDDING, HUB_FALLBACK_PATTERNS, HUB_PATTERNS, LAYOUTS, SAFETENSORS_FILE, SAFETENSORS_INDEX, TOKENIZER_FILE, compare_config, compare_state, detect_layout, infer_from_tensors, read_config)
from .layouts2 import READERS, WRITERS, compare_config2, config_generation, generation_problem, infer_from_tensors2

MIXER_OF = {kind: MIXERS[kind].__name__ for kind in ("Mamba1", "Mamba2")}  # the mixer class of each layer kind

# files that save_pretrained may replace in an existing folder
_CHECKPOINT_FILE = re.compile(r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map)\.json"
                              r"|model(-\d+-of-\d+)?\.safetensors(\.index\.json)?"
                              r"|pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?")

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
    """Load a Mamba-1 or Mamba-2 checkpoint folder, official or Hugging Face layout, into a :class:`MambaLM`.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors`` (single or sharded with
            its index) or ``pytorch_model.bin``; or a Hub id like ``"state-spaces/mamba-130m"``,
            downloaded when ``huggingface_hub`` and a network are there.
        device: where the weights go (default: the CPU).
        dtype: a floating dtype for the weights (default: the dtype stored for the embedding);
            ``A_log``, ``D`` (and Mamba-2's ``dt_bias``) stay float32 when it is bfloat16 or
            float16, as in ``model.to(dtype)``.

    Returns:
        The model in ``eval()`` mode. Bias flags come from the tensors present; logits have
        ``padded_vocab_size`` columns (see the module docstring for the vocabulary mapping).

    Raises:
        CheckpointError (a ``ValueError``): no such folder; not a checkpoint; unreadable, truncated
        or foreign weight files; weights of the other generation; a config that disagrees with the tensors
        (sizes, layer count, heads, groups, bias flags, vocabulary padding); missing or unexpected keys;
        wrong shapes. Raised before any weight is used, naming each key and the fix.
        TypeError: ``dtype`` is not a floating ``torch.dtype``.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    device = check_device(device)  # before any file is read
    folder = resolve_checkpoint(path)
    raw = read_config(folder)
    layout = detect_layout(raw, folder / CONFIG_FILE)
    generation = config_generation(raw, layout, folder / CONFIG_FILE)  # "Mamba1" or "Mamba2"
    tensors, source = _read_tensors(folder)
    where = f"cannot load {folder} ({layout} layout, {source}, {generation} config)"
    if (wrong := generation_problem(generation, layout, tensors)) is not None:  # before 50 missing keys
        raise CheckpointError(f"{where}: {wrong}")
    fields, explicit = READERS[layout, generation](raw, folder / CONFIG_FILE)
    inferred = (infer_from_tensors2 if generation == "Mamba2" else infer_from_tensors)(tensors)
    problems = (compare_config2(fields, explicit, inferred, layout, raw) if generation == "Mamba2" else
                compare_config(fields, explicit, inferred, layout, by_intermediate="intermediate_size" in raw))
    if problems:
        raise CheckpointError(where + ":\n  - " + "\n  - ".join(problems))
    shown = {}  # our name -> the file's name, for messages
    if layout == "hf" and EMBEDDING not in tensors:
        shown[EMBEDDING] = HF_EMBEDDING
        if HF_EMBEDDING in tensors:
            tensors[EMBEDDING] = tensors.pop(HF_EMBEDDING)  # the one name that differs
    fields.update(bias=inferred["bias"][0], conv_bias=inferred["conv_bias"][0])  # decided by the tensors
    try:
        config = MambaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: config.json holds a bad value: {err}") from None
    if config.tie_embeddings and "lm_head.weight" not in tensors and EMBEDDING in tensors:
        tensors["lm_head.weight"] = tensors[EMBEDDING]  # a tied head is often left out of the file
    with torch.device("meta"):  # shapes and names only, no memory, no initialization cost
        shapes = {k: tuple(v.shape) for k, v in MambaLM(config).state_dict().items()}
    problems = compare_state(shapes, tensors, shown)
    if (not problems and config.tie_embeddings
            and not torch.equal(tensors["lm_head.weight"], tensors[EMBEDDING])):
        name = "tie_word_embeddings" if layout == "hf" else "tie_embeddings"
        problems.append(f"'lm_head.weight' differs from the embedding although config.json ties them "
                        f"({name} is true): set \"{name}\": false in config.json")
    if problems:
        raise CheckpointError(where + ":\n  - " + "\n  - ".join(problems))
    dtype = dtype or tensors[EMBEDDING].dtype
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
            ``MambaForCausalLM`` (``Mamba2ForCausalLM``) ``.from_pretrained``; ``"official"`` ->
            ``config.json`` + ``pytorch_model.bin`` (a plain state dict), loadable by ``mamba_ssm``.
        tokenizer: a ``tokenizers.Tokenizer``, written as ``tokenizer.json``; or None.

    Returns:
        The folder's path. Everything is written to a temporary folder beside it, flushed to
        disk and renamed into place, so a crash mid-save never leaves a folder that loads.

    Raises:
        TypeError: ``model`` is not a :class:`MambaLM`, ``tokenizer`` not a ``tokenizers.Tokenizer``.
        ValueError: an unknown ``layout``; mixers not all ``MambaMixer`` or all ``Mamba2Mixer``;
        a target that is a file, holds other files or a ``config.json`` of something else; an
        ``rms_norm_eps`` other than 1e-5 in the official layout (its config has no field for it);
        in the Hugging Face layout ``d_intermediate > 0`` and, for Mamba-2, ``rmsnorm=False``,
        ``norm_before_gate=True``, ``D_has_hdim=True`` (transformers has no such models).
    """
    from tokenizers import Tokenizer

    if not isinstance(model, MambaLM):
        raise TypeError(f"model must be a MambaLM, got {type(model).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer or None, got {type(tokenizer).__name__}")
    kinds = sorted({type(layer.mixer).__name__ for layer in model.backbone.layers})
    if kinds not in (["MambaMixer"], ["Mamba2Mixer"]) or MIXER_OF[model.config.layer] != kinds[0]:
        raise ValueError(f"save_pretrained writes Mamba-1 or Mamba-2 checkpoints, whose mixers are all MambaMixer "
                         f"or all Mamba2Mixer as config.layer says ({model.config.layer!r}); this model's mixers are "
                         f"{kinds}, which no Mamba loader reads (LTI task models, Transformers, hybrids: tasks.save_task_model)")
    config = model.config
    if layout == "official" and config.rms_norm_eps != 1e-5:
        raise ValueError(f"the official layout has no field for rms_norm_eps={config.rms_norm_eps} "
                         f"(mamba_ssm always uses 1e-5); save with layout='hf'")
    config_json = WRITERS[layout, config.layer](config, model.backbone.embedding.weight.dtype)  # may refuse
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
                detect_layout(read_config(target), target / CONFIG_FILE)
            except CheckpointError as err:
                raise ValueError(f"refusing to replace {target}: its {CONFIG_FILE} is not a Mamba "
                                 f"checkpoint's ({err}); choose another folder or remove it") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        state = _state_for_saving(model)
        if layout == "hf":
            state[HF_EMBEDDING] = state.pop(EMBEDDING)
            if config.tie_embeddings:
                del state["lm_head.weight"]  # transformers ties it back on load
            save_file(state, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        else:
            torch.save(state, tmp / BIN_FILE)
        _write_json(config_json, tmp / CONFIG_FILE)
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
