"""A real mamba-130m: greedy text equal to what transformers' own integration test publishes.

Runs only when ``MINIMAMBA_CHECKPOINT`` names a local mamba-130m folder, in either layout
(``state-spaces/mamba-130m`` or ``state-spaces/mamba-130m-hf``); skipped otherwise, and the
skip says so. The tokenizer is the folder's ``tokenizer.json`` (the ``-hf`` folder has one),
or the file or folder named by ``MINIMAMBA_TOKENIZER`` (the official folder has none).

Expected values: transformers' ``MambaIntegrationTests.test_simple_generate`` in
``tests/models/mamba/test_modeling_mamba.py`` (huggingface/transformers, commit
0e1bc2c88b15071442875839f65555731a96a1ea): mamba-130m-hf in float32, greedy, 10 new tokens
after "Hey how are you doing?", and the first 40 logits at position 0 with rtol = atol = 1e-3.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import minimamba_core as mm

pytestmark = pytest.mark.pretrained

CHECKPOINT = os.environ.get("MINIMAMBA_CHECKPOINT")
PROMPT = "Hey how are you doing?"
# transformers 0e1bc2c, tests/models/mamba/test_modeling_mamba.py, test_simple_generate
EXPECTED_TEXT = "Hey how are you doing?\n\nI'm so glad you're here."
EXPECTED_LOGITS_0_40 = torch.tensor([
    -55.6909, -69.7903, -49.8981, -51.7581, -57.6544, -57.9368, -56.9591,
    -57.9033, -54.6787, -55.9261, -55.3011, -58.0765, -60.5642, -47.0176,
    -52.0344, -49.7836, -55.9463, -57.8957, -56.7627, -57.1080, -57.3434,
    -58.3015, -57.7875, -58.7760, -59.6037, -59.0665, -58.7087, -52.9293,
    -53.4654, -57.3466, -56.9294, -55.7314, -53.3141, -55.8171, -56.9879,
    -56.9121, -56.2139, -54.7198, -56.4134, -57.4825])


@pytest.fixture(scope="module")
def model_and_tokenizer():
    if not CHECKPOINT:
        pytest.skip("set MINIMAMBA_CHECKPOINT to a local mamba-130m folder (state-spaces/mamba-130m or "
                    "state-spaces/mamba-130m-hf) to run the pretrained check")
    folder = Path(CHECKPOINT).expanduser()
    tokenizer_path = os.environ.get("MINIMAMBA_TOKENIZER") or folder
    if not (Path(tokenizer_path) / "tokenizer.json").is_file() and not Path(tokenizer_path).is_file():
        pytest.skip(f"{folder} has no tokenizer.json: set MINIMAMBA_TOKENIZER to the tokenizer.json of "
                    f"state-spaces/mamba-130m-hf (the GPT-NeoX-20B tokenizer)")
    model = mm.load_pretrained(folder, device="cpu", dtype=torch.float32)
    return model, mm.load_tokenizer(tokenizer_path)


def test_mamba_130m_is_the_130m_model(model_and_tokenizer):
    model, _ = model_and_tokenizer
    c = model.config
    assert (c.d_model, c.n_layer, c.d_state, c.padded_vocab_size) == (768, 24, 16, 50280)


def test_mamba_130m_greedy_text_matches_transformers_integration_test(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = torch.tensor([tokenizer.encode(PROMPT).ids])
    with torch.no_grad():
        logits = model(ids)
    torch.testing.assert_close(logits[0, 0, :40], EXPECTED_LOGITS_0_40, rtol=1e-3, atol=1e-3)
    out = mm.generate(model, ids, max_new_tokens=10, temperature=0)
    assert tokenizer.decode(out[0].tolist(), skip_special_tokens=False) == EXPECTED_TEXT
