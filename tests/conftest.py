"""Shared fixtures: the ``device`` fixture runs a test on the CPU and on every accelerator present;
``one_thread`` for modules of tiny models; ``small_model`` for the bad-input tests; ``split`` of
Tiny Shakespeare; ``offline`` and ``hf_folder`` for the interop tests."""

import pytest
import torch

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append("cuda")
if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
    DEVICES.append("mps")


@pytest.fixture(params=DEVICES)
def device(request):
    """A torch.device; tests that take it run once per available device."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: the fastest setting for them, and two
    threads thrash when the 2-core machine is busy. Use with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline(monkeypatch):
    """No test may reach the network (belt and braces: the interop tests fake the Hub)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hf_folder(tmp_path):
    """A transformers-written checkpoint folder (odd vocab, biases) that a test damages."""
    from checkpoint_helpers import HF_CONFIGS, hf_model

    hf_model(seed=12, **HF_CONFIGS["odd_vocab_bias"]).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


@pytest.fixture(scope="module")
def small_model():
    """The bad-input tests' model (``helpers.small_config()``), in eval mode, one per module."""
    import minimamba_core as mm
    from helpers import small_config

    torch.manual_seed(0)
    return mm.MambaLM(small_config()).eval()


@pytest.fixture(scope="module")
def split():
    """Tiny Shakespeare: ``(text, vocab, train_ids, val_ids)``, the contiguous 90/10 split."""
    from minimamba_core.training import data

    text = data.load_text()
    vocab = data.CharVocab.from_text(text)
    return (text, vocab) + data.split_train_val(vocab.encode(text))
