"""Helpers of the interop tests (``test_interop_*.py``): transformers' models as the outside
reference, our perturbed models, official-layout folders written by hand, damaged folders.

The outside reference is transformers' ``MambaForCausalLM`` (pinned in constraints.txt): the
same random weights must give the same logits (relative error <= 1e-5 in float32), the same
32 greedy tokens and the same cached-decoding logits. Official-layout folders are written here
by hand (official key names, nested ``ssm_cfg``), independently of ``save_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

import minimamba_core as mm

transformers.logging.set_verbosity_error()  # silence "falling back to the reference implementation"
REL_TOL = 1e-5  # the issue's bound on the logits' relative error in float32
N_GREEDY = 32


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@torch.no_grad()
def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Add noise to every parameter, so biases, D, A_log, the norms are all non-trivial."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def hf_model(seed: int = 0, **kwargs) -> MambaForCausalLM:
    torch.manual_seed(seed)
    model = MambaForCausalLM(HFMambaConfig(**kwargs))
    perturb_(model, seed)
    model.generation_config.eos_token_id = None  # never stop early: compare all 32 tokens
    return model.eval()


def our_model(seed: int = 0, **kwargs) -> mm.MambaLM:
    torch.manual_seed(seed)
    model = mm.MambaLM(mm.MambaConfig(**kwargs))
    perturb_(model, seed)
    return model.eval()


def random_ids(vocab: int, shape=(2, 11), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def assert_same_model(ours: mm.MambaLM, hf: MambaForCausalLM) -> None:
    """Same logits, same 32 greedy tokens, same cached-decoding logits."""
    hf.generation_config.eos_token_id = None
    vocab, padded = ours.config.vocab_size, ours.config.padded_vocab_size
    ids = random_ids(vocab)
    ours_logits, hf_logits = ours(ids), hf(ids).logits  # (b, l, padded)
    assert ours_logits.shape == hf_logits.shape == (*ids.shape, padded)
    assert rel_err(ours_logits, hf_logits) <= REL_TOL

    prompt = ids[:1, :5]
    ours_ids = mm.generate(ours, prompt, N_GREEDY, temperature=0)
    # our sampler never picks a padded id (>= vocab_size); tell transformers the same
    # an explicit mask: otherwise transformers takes id 0 (its default pad_token_id) for padding
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N_GREEDY,
                      do_sample=False, eos_token_id=None,
                      suppress_tokens=list(range(vocab, padded)) or None,
                      output_logits=True, return_dict_in_generate=True)
    assert torch.equal(ours_ids, out.sequences), (ours_ids.tolist(), out.sequences.tolist())

    cache = ours.empty_cache(1)  # our prefill + steps over the same tokens
    steps = [ours(prompt, cache=cache)[:, -1]]
    for t in out.sequences[0, prompt.shape[1]:-1]:
        steps.append(ours.step(t.view(1, 1), cache)[:, -1])
    hf_steps = torch.stack(out.logits, dim=1)  # (1, N_GREEDY, padded): transformers' cached decoding
    assert rel_err(torch.stack(steps, dim=1), hf_steps) <= REL_TOL


def official_state(hf: MambaForCausalLM) -> dict[str, torch.Tensor]:
    """An official-layout state dict from transformers' weights, renamed by hand."""
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in hf.state_dict().items()}
    state.setdefault("lm_head.weight", state["backbone.embedding.weight"])
    return state


def write_official(folder: Path, config: dict, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "pytorch_model.bin")
    return folder




HF_CONFIGS = {
    "small": dict(vocab_size=64, hidden_size=32, num_hidden_layers=2),
    "odd_vocab_bias": dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, use_bias=True),
    "dstate8_expand3_rank5": dict(vocab_size=50, hidden_size=24, num_hidden_layers=3, state_size=8,
                                  expand=3, time_step_rank=5, conv_kernel=3),
    "untied_noconvbias_eps": dict(vocab_size=41, hidden_size=16, num_hidden_layers=1,
                                  tie_word_embeddings=False, use_conv_bias=False,
                                  layer_norm_epsilon=1e-6),
    # transformers sizes the layers by intermediate_size and ignores expand (left at 2 here):
    # the shape of its own test configuration (MambaModelTester: hidden 32, intermediate 32)
    "intermediate_equals_hidden": dict(vocab_size=99, hidden_size=32, intermediate_size=32,
                                       num_hidden_layers=2),
    "intermediate_three_times_hidden": dict(vocab_size=64, hidden_size=16, intermediate_size=48,
                                            num_hidden_layers=2),
}

OUR_CONFIGS = {
    "small": dict(d_model=32, n_layer=2, vocab_size=64),
    "odd_vocab_bias": dict(d_model=16, n_layer=2, vocab_size=37, pad_vocab_size_multiple=1, bias=True),
    "padded_vocab_dstate8_expand3_rank5": dict(d_model=24, n_layer=3, vocab_size=45, d_state=8, expand=3,
                                               dt_rank=5, d_conv=3),  # 45 tokens, 48 rows
    "untied_noconvbias_eps": dict(d_model=16, n_layer=1, vocab_size=41, tie_embeddings=False,
                                  conv_bias=False, rms_norm_eps=1e-6),
}


def edit_tensors(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def load_error(folder) -> str:
    """The message of the ``CheckpointError`` that loading ``folder`` must raise."""
    with pytest.raises(mm.CheckpointError) as info:
        mm.load_pretrained(folder)
    return str(info.value)

