"""Interop: checkpoints in both layouts, tokenizers, the ``mamba_ssm`` / MiniMamba 1.0.1 calling
conventions, and the command line. Not the lesson: the model is complete without this folder.

* ``layouts.py``: ``config.json`` of the official and Hugging Face layouts <-> ``MambaConfig``;
* ``layouts2.py``: the same for Mamba-2 checkpoints (``ssm_cfg.layer: "Mamba2"``, ``Mamba2ForCausalLM``);
* ``checkpoint.py``: ``load_pretrained``, ``save_pretrained``;
* ``tokenizer.py``: ``load_tokenizer``, ``build_char_tokenizer``;
* ``compat.py``: ``Mamba``, ``InferenceParams``;
* ``cli.py``: ``python -m minimamba_core`` (``minimamba-generate``).
"""

from .checkpoint import load_pretrained, resolve_checkpoint, save_pretrained
from .compat import InferenceParams, Mamba
from .layouts import CheckpointError
from .tokenizer import build_char_tokenizer, load_tokenizer

__all__ = ["CheckpointError", "InferenceParams", "Mamba", "build_char_tokenizer", "load_pretrained",
           "load_tokenizer", "resolve_checkpoint", "save_pretrained"]
