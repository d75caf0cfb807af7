"""Tokenizers (``minimamba_core/interop/tokenizer.py``): the character-level tokenizer, and
``tokenizer.json`` saved and loaded with a checkpoint in either layout."""

from __future__ import annotations

import pytest
from checkpoint_helpers import OUR_CONFIGS, our_model

import minimamba_core as mm
from minimamba_core.interop import layouts

pytestmark = pytest.mark.usefixtures("one_thread", "offline")  # tests/conftest.py


def test_char_tokenizer_round_trip_and_ids():
    text = "First Citizen:\nBefore we proceed, hear me speak.\n\tÄ é  !"
    tok = mm.build_char_tokenizer(text)
    chars = sorted(set(text))
    assert tok.get_vocab_size() == len(chars)
    assert tok.encode(text).ids == [chars.index(c) for c in text]  # sorted-character ids
    assert tok.decode(tok.encode(text).ids) == text  # spaces, tabs, newlines survive
    with pytest.raises(Exception, match="Missing"):
        tok.encode("Q")  # unknown character, no unk_token
    with_unk = mm.build_char_tokenizer("ab", unk_token="<unk>")
    assert with_unk.encode("abz").ids == [0, 1, 2]
    with pytest.raises(ValueError, match="text is empty"):
        mm.build_char_tokenizer("")
    with pytest.raises(TypeError, match="text must be a str"):
        mm.build_char_tokenizer(["a"])
    with pytest.raises(ValueError, match="unk_token 'a' is a character of text"):
        mm.build_char_tokenizer("ab", unk_token="a")


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_tokenizer_saved_and_loaded_with_the_checkpoint(layout, tmp_path):
    tok = mm.build_char_tokenizer("to be or not to be")
    ours = our_model(seed=21, d_model=8, n_layer=1, vocab_size=tok.get_vocab_size())
    folder = mm.save_pretrained(ours, tmp_path / layout, layout=layout, tokenizer=tok)
    loaded = mm.load_tokenizer(folder)
    assert loaded.encode("not to be").ids == tok.encode("not to be").ids
    assert loaded.decode(loaded.encode("to be").ids) == "to be"
    assert mm.load_tokenizer(folder / "tokenizer.json").get_vocab_size() == tok.get_vocab_size()


def test_load_tokenizer_errors(tmp_path):
    ours = our_model(seed=22, **OUR_CONFIGS["small"])
    folder = mm.save_pretrained(ours, tmp_path / "official", layout="official")
    with pytest.raises(mm.CheckpointError, match=r"has no tokenizer.json\. The official .*GPT-NeoX-20B"):
        mm.load_tokenizer(folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(mm.CheckpointError, match="is not a tokenizers file"):
        mm.load_tokenizer(folder)

