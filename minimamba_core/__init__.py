"""minimamba_core: Mamba (Gu & Dao 2023, arXiv 2312.00752), Mamba-2 (Dao & Gu 2024, arXiv
2405.21060) and Mamba-3 (Lahoti et al. 2026, arXiv 2603.15569) written plainly in PyTorch.

Glossary (the paper's letters, used in every module):
``b`` batch, ``l`` sequence length, ``d_model`` (D), ``d_inner`` (E*D), ``d_state`` (N),
``dt_rank`` (R), ``d_conv`` (k), ``x`` input, ``h`` state, ``y`` output, ``delta`` (the step
size), ``A, B, C, D`` the SSM parameters, ``A_bar, B_bar`` their discretized forms. Mamba-2 adds
``nheads`` (H) heads of ``headdim`` (P) channels, ``ngroups`` (G) groups of heads sharing ``B``
and ``C``, ``chunk_size`` (Q), and calls the step size ``dt``. Attention (``attention.py``) has
``num_heads`` query heads and ``num_heads_kv`` key/value heads of ``head_dim`` channels.
"""

# The lesson, in reading order
from .config import MambaConfig
from .norm import RMSNorm, RMSNormGated
from .scan import selective_scan, selective_scan_parallel, selective_scan_sequential
from .ssd import ssd, ssd_chunked, ssd_quadratic, ssd_sequential
from .mamba3 import mamba3_chunked, mamba3_sequential
from .mixer import MambaMixer
from .mixer2 import Mamba2Mixer
from .mixer3 import Mamba3Mixer
from .attention import AttentionMixer, attention_reference
from .model import MambaLM, ResidualBlock
from .cache import InferenceCache
from .generate import generate, sample_next_token
from .devices import describe_device, pick_device
# The engine's switch, checkpoints and other conventions
from .fast_scan import set_scan_compile
from .interop import (CheckpointError, InferenceParams, Mamba, build_char_tokenizer, load_pretrained,
                      load_tokenizer, save_pretrained)

__version__ = "0.1.0"

__all__ = [
    "AttentionMixer",
    "CheckpointError",
    "InferenceCache",
    "InferenceParams",
    "Mamba",
    "MambaConfig",
    "MambaLM",
    "Mamba2Mixer",
    "Mamba3Mixer",
    "MambaMixer",
    "RMSNorm",
    "RMSNormGated",
    "ResidualBlock",
    "attention_reference",
    "build_char_tokenizer",
    "describe_device",
    "generate",
    "load_pretrained",
    "load_tokenizer",
    "mamba3_chunked",
    "mamba3_sequential",
    "pick_device",
    "sample_next_token",
    "save_pretrained",
    "selective_scan",
    "selective_scan_parallel",
    "selective_scan_sequential",
    "set_scan_compile",
    "ssd",
    "ssd_chunked",
    "ssd_quadratic",
    "ssd_sequential",
]
