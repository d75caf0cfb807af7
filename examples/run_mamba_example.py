"""Build a Mamba language model, run a forward pass and a short cached generation.

Run: ``python examples/run_mamba_example.py`` (``make test`` runs it). With ``MINIMAMBA_QUICK=1``
it uses a smaller model so CI stays fast; the code path is the same.
"""

import os
import time

import torch

import minimamba_core as mm


def main() -> None:
    quick = os.environ.get("MINIMAMBA_QUICK") == "1"
    torch.manual_seed(0)
    device = mm.pick_device()
    print(f"device: {mm.describe_device(device)}")

    # The configuration of the original MiniMamba README; a quarter of the width in quick mode.
    d_model, n_layer = (128, 2) if quick else (512, 6)
    config = mm.MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=10000, d_state=16, d_conv=4, expand=2)
    model = mm.MambaLM(config).to(device).eval()
    print(f"parameters: {model.num_parameters():,} "
          f"(d_model={config.d_model}, n_layer={config.n_layer}, vocab {config.vocab_size} "
          f"padded to {config.padded_vocab_size})")

    input_ids = torch.randint(0, config.vocab_size, (2, 128)).to(device)
    with torch.no_grad():
        model(input_ids)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":  # MPS runs asynchronously too: wait before reading the clock
            torch.mps.synchronize()
        start = time.perf_counter()
        logits = model(input_ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":  # MPS runs asynchronously too: wait before reading the clock
            torch.mps.synchronize()
        elapsed = time.perf_counter() - start
    print(f"input shape:  {tuple(input_ids.shape)}")
    print(f"output shape: {tuple(logits.shape)}")
    print(f"forward time: {elapsed * 1000:.1f} ms (batch 2 x 128 tokens, illustrative)")

    prompt = input_ids[:1, :8]
    start = time.perf_counter()
    out = mm.generate(model, prompt, max_new_tokens=16, temperature=0.8, top_k=50,
                      generator=torch.Generator(device=device).manual_seed(0))
    elapsed = time.perf_counter() - start
    print(f"generated {out.shape[1] - prompt.shape[1]} tokens with the cache in {elapsed * 1000:.0f} ms: "
          f"{out[0, 8:].tolist()}")


if __name__ == "__main__":
    main()
