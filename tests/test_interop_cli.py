"""The command line ``python -m minimamba_core`` (``main`` in ``minimamba_core/interop/cli.py``).

End to end: transformers writes a checkpoint, ``tokenizers`` builds its character-level
tokenizer, the CLI runs as a subprocess and must print exactly the prompt followed by the
continuation that transformers' own greedy ``generate`` produces.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

import minimamba_core as mm
from helpers import tiny_lm
from minimamba_core import __main__ as dunder_main
from minimamba_core.interop.cli import TextStreamer, main

transformers.logging.set_verbosity_error()
TEXT = "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind to suffer\n"
PROMPT = "to be"
N_NEW = 24


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory) -> tuple[Path, MambaForCausalLM, Tokenizer]:
    """A folder written by transformers, with a tokenizer.json written by tokenizers."""
    tok = mm.build_char_tokenizer(TEXT)
    torch.manual_seed(0)
    hf = MambaForCausalLM(HFMambaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=2))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights away from the initialization, so the text is varied
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    hf.eval()
    folder = tmp_path_factory.mktemp("cli") / "hf"
    hf.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder, hf, tok


def test_cli_end_to_end_matches_transformers(hf_checkpoint):
    """``python -m minimamba_core``, the README's spelling. (Issue 3's ``python -m
    minimamba_core.generate`` ran it too until the CLI moved to ``interop/cli.py``; the installed
    command: ``test_installed_command_is_the_cli``.)"""
    folder, hf, tok = hf_checkpoint
    prompt_ids = torch.tensor([tok.encode(PROMPT).ids])
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        expected_ids = hf.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                   max_new_tokens=N_NEW, do_sample=False, eos_token_id=None)
    expected = tok.decode(expected_ids[0].tolist())
    assert expected.startswith(PROMPT) and len(expected) == len(PROMPT) + N_NEW
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "minimamba_core", "--checkpoint", str(folder), "--prompt", PROMPT,
         "--max-new-tokens", str(N_NEW), "--temperature", "0", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert "Warning" not in result.stderr, result.stderr


def test_installed_command_is_the_cli():
    """``minimamba-generate`` (pyproject's script) and ``python -m minimamba_core`` run this ``main``."""
    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["minimamba-generate"].partition(":")
    assert getattr(importlib.import_module(module), name) is main is dunder_main.main


def test_cli_sampling_is_seeded(hf_checkpoint, capsys):
    folder, _, tok = hf_checkpoint
    args = ["--checkpoint", str(folder), "--prompt", PROMPT, "--max-new-tokens", str(N_NEW),
            "--temperature", "0.9", "--top-k", "10", "--top-p", "0.95", "--seed", "3", "--device", "cpu"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first
    model = mm.load_pretrained(folder)  # the same draw through the library
    ids = mm.generate(model, torch.tensor([tok.encode(PROMPT).ids]), N_NEW, temperature=0.9, top_k=10,
                      top_p=0.95, generator=torch.Generator().manual_seed(3))
    assert first == tok.decode(ids[0].tolist()) + "\n"


def test_cli_reads_a_separate_tokenizer_and_an_official_folder(hf_checkpoint, tmp_path, capsys):
    folder, _, tok = hf_checkpoint
    official = mm.save_pretrained(mm.load_pretrained(folder), tmp_path / "official", layout="official")
    base = ["--checkpoint", str(official), "--prompt", PROMPT, "--max-new-tokens", "5", "--temperature", "0"]
    with pytest.raises(SystemExit) as info:
        main(base)  # the official layout carries no tokenizer
    assert info.value.code == 2
    assert "has no tokenizer.json" in capsys.readouterr().err
    main(base + ["--tokenizer", str(folder / "tokenizer.json")])
    out = capsys.readouterr().out
    assert out.startswith(PROMPT) and len(out) == len(PROMPT) + 5 + 1


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "-1"], "temperature must be a number >= 0"),
    (["--top-p", "0"], "top_p must lie in (0, 1]"),
    (["--max-new-tokens", "-2"], "--max-new-tokens must be >= 0"),
    (["--prompt", "QQ"], "the tokenizer cannot encode --prompt"),
    (["--prompt", ""], "--prompt encodes to no tokens"),
    (["--checkpoint", "./no/such/folder"], "no folder"),
])
def test_cli_errors_exit_2_with_a_message(hf_checkpoint, capsys, extra, message):
    folder, _, _ = hf_checkpoint
    args = ["--checkpoint", str(folder), "--prompt", PROMPT, "--max-new-tokens", "3"] + extra
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


class _Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes: list[str] = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def test_streamer_writes_each_token_as_it_arrives():
    tok = mm.build_char_tokenizer("abc ")
    out = _Recorder()
    streamer = TextStreamer(tok, tok.encode("ab").ids, out)
    for ch in "c a":
        streamer(torch.tensor(tok.encode(ch).ids))
    streamer.end()
    assert out.writes == ["ab", "c", " ", "a", "", "\n"]


def test_streamer_holds_back_an_incomplete_utf8_character():
    """A byte-level BPE splits 'é' into two byte tokens; nothing is written between them."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["cafe"], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    ids = tok.encode("é").ids
    assert len(ids) == 2  # the two UTF-8 bytes of 'é' (0xC3 0xA9), not merged
    out = _Recorder()
    streamer = TextStreamer(tok, tok.encode("caf").ids, out)
    streamer(torch.tensor(ids[:1]))
    assert out.getvalue() == "caf"
    streamer(torch.tensor(ids[1:]))
    assert out.getvalue() == "café"


# -- defects found by the adversarial review (2026-11-29, fixed in ede8461) and the new-user review
# (fixed in dc98245): each test failed before its fix

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_names_an_unavailable_device(tmp_path):
    """Adversarial review: an unavailable ``--device`` exits with status 2 and a message, no traceback."""
    tok = mm.build_char_tokenizer("hello world\n")
    folder = mm.save_pretrained(tiny_lm(vocab_size=tok.get_vocab_size()), tmp_path / "ck", tokenizer=tok)
    result = subprocess.run([sys.executable, "-m", "minimamba_core", "--checkpoint", str(folder),
                             "--prompt", "hello", "--device", "cuda"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--device cuda is not available here" in result.stderr and "Traceback" not in result.stderr


def test_cli_piped_into_a_closed_reader_exits_quietly(tmp_path):
    """New-user review: piped into a reader that closes (``| head -c 1``), the CLI exits quietly."""
    tok = mm.build_char_tokenizer("hello world\n")
    folder = mm.save_pretrained(tiny_lm(vocab_size=tok.get_vocab_size()), tmp_path / "ck", tokenizer=tok)
    cli = subprocess.Popen([sys.executable, "-m", "minimamba_core", "--checkpoint", str(folder), "--prompt",
                            "hello", "--max-new-tokens", "3000", "--device", "cpu", "--seed", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cli.stdout.read(1)
    cli.stdout.close()  # what `| head -c 1` does
    _, err = cli.communicate(timeout=120)
    assert cli.returncode == 0 and b"Traceback" not in err, err.decode()


def test_the_usage_line_names_the_command_that_ran(monkeypatch, capsys):
    for argv0, prog in (("/usr/bin/minimamba-generate", "minimamba-generate"),
                        ("/x/minimamba_core/__main__.py", "python -m minimamba_core")):
        monkeypatch.setattr(sys, "argv", [argv0, "--help"])
        with pytest.raises(SystemExit):
            main(["--help"])
        assert capsys.readouterr().out.startswith(f"usage: {prog} ")
