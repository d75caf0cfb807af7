"""Whole-model numbers: training throughput and cached decoding latency, ours against the peers.

    python -m benchmarks.bench_model --device cuda     # the 130m configuration
    python -m benchmarks.bench_model --device cpu      # the Tiny Shakespeare CPU model

* Training throughput: tokens per second of forward + cross-entropy + backward (no optimizer
  step) on random token ids, median of repeats after warm-up.
* Decoding latency: per new token, greedy, batch 1, after a 16-token prompt, as
  ``(time for N2 tokens - time for N1 tokens) / (N2 - N1)`` with each library's own cached
  generation loop (ours ``generate``, transformers ``generate``, mamba.py ``LM.step``).
Same configuration for all three (official initialization differs in details; timings do not
depend on the values). transformers runs its pure-torch path: no kernels are installed.
Results are merged into ``--out`` under ``model-<device>``; schema in ``benchmarks/LOG.md``
(results file schema).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import minimamba_core as mm
from minimamba_core import fast_scan

from . import approaches, common

CONFIGS = {  # name -> (d_model, n_layer, vocab, train batch, train length; Mamba-2's headdim, N, chunk)
    "cuda": dict(name="mamba-130m", d_model=768, n_layer=24, vocab=50280, batch=8, seqlen=1024,
                 mamba2=dict(headdim=64, d_state=128, chunk_size=256)),  # the mamba2-130m geometry
    "cpu": dict(name="tiny-shakespeare-cpu", d_model=128, n_layer=3, vocab=65, batch=32, seqlen=128,
                mamba2=dict(headdim=32, d_state=64, chunk_size=64)),  # scripts/train_shakespeare.py --layer Mamba2
}


# the models bench_model times; *_mamba2: the same width and depth with Mamba-2 mixers
LIBS = ("ours", "ours_compiled", "transformers", "mambapy", "ours_mamba2", "transformers_mamba2")


def build(kind: str, cfg: dict, device, layer: str = "Mamba1"):
    """The model of library ``kind`` (``ours``, ``transformers``, ``mambapy``) for ``cfg``."""
    if layer == "Mamba2":
        m2 = cfg["mamba2"]
        if kind == "ours":
            return mm.MambaLM(mm.MambaConfig(d_model=cfg["d_model"], n_layer=cfg["n_layer"], vocab_size=cfg["vocab"],
                                             ssm_cfg={"layer": "Mamba2"}, pad_vocab_size_multiple=1, **m2)).to(device)
        from transformers import Mamba2Config, Mamba2ForCausalLM

        return Mamba2ForCausalLM(Mamba2Config(
            hidden_size=cfg["d_model"], num_hidden_layers=cfg["n_layer"], vocab_size=cfg["vocab"], expand=2,
            num_heads=2 * cfg["d_model"] // m2["headdim"], head_dim=m2["headdim"], state_size=m2["d_state"],
            n_groups=1, chunk_size=m2["chunk_size"], tie_word_embeddings=True)).to(device)
    if kind == "ours":
        return mm.MambaLM(mm.MambaConfig(d_model=cfg["d_model"], n_layer=cfg["n_layer"],
                                         vocab_size=cfg["vocab"])).to(device)
    if kind == "transformers":
        from transformers import MambaConfig, MambaForCausalLM

        return MambaForCausalLM(MambaConfig(hidden_size=cfg["d_model"], num_hidden_layers=cfg["n_layer"],
                                            vocab_size=cfg["vocab"], state_size=16, expand=2,
                                            conv_kernel=4, use_mambapy=False)).to(device)
    return _MambaPyLM(cfg).to(device)


class _MambaPyLM(torch.nn.Module):
    """mamba.py's ``Mamba`` stack with an embedding, final RMSNorm and tied head (what its
    ``mambapy.lm.LM`` adds; that module imports ``mamba_ssm`` for Mamba-2, so it is not used)."""

    def __init__(self, cfg):
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig, RMSNorm

        self.config = MambaConfig(d_model=cfg["d_model"], n_layers=cfg["n_layer"])
        self.embedding = torch.nn.Embedding(cfg["vocab"], cfg["d_model"])
        self.mamba = Mamba(self.config)
        self.norm_f = RMSNorm(cfg["d_model"])
        self.lm_head = torch.nn.Linear(cfg["d_model"], cfg["vocab"], bias=False)
        self.lm_head.weight = self.embedding.weight

    def forward(self, ids):
        return self.lm_head(self.norm_f(self.mamba(self.embedding(ids))))

    def step(self, token, caches):
        x, caches = self.mamba.step(self.embedding(token), caches)
        return self.lm_head(self.norm_f(x)), caches


def logits_of(kind, model, ids):
    out = model(ids)
    return out.logits if kind == "transformers" else out


def train_step(kind, model, ids):
    logits = logits_of(kind, model, ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    loss.backward()


@torch.no_grad()
def decode(kind, model, prompt, new):
    """Greedy continuation of ``prompt (1, l)`` by ``new`` tokens with the library's cache."""
    if kind == "ours":
        return mm.generate(model, prompt, max_new_tokens=new, temperature=0.0)
    if kind == "transformers":
        return model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                              pad_token_id=0)
    cfg = model.config
    caches = [(None, torch.zeros(1, cfg.d_inner, cfg.d_conv - 1, device=prompt.device))
              for _ in range(cfg.n_layers)]
    for i in range(prompt.shape[1]):
        logits, caches = model.step(prompt[:, i], caches)
    token = logits.argmax(-1)
    for _ in range(new - 1):
        logits, caches = model.step(token, caches)
        token = logits.argmax(-1)
    return token


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=common.EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu (the Tiny Shakespeare recipe) or cuda (the mamba-130m configuration)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    p.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS, metavar="LIB",
                   help="models to time, any of: " + ", ".join(LIBS) + " (ours_compiled: the scan compiled)")
    p.add_argument("--decode-tokens", type=int, nargs=2, default=[8, 40], metavar=("N1", "N2"),
                   help="decoding ms/token is (time for N2 tokens - time for N1) / (N2 - N1)")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="CPU timing: wall clock, or this process's CPU time (for a shared machine)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="epoch seconds after which remaining measurements are skipped")
    p.add_argument("--out", help="results JSON (default: results/<machine>-<date>.json; at the "
                   "smoke size, a file in the temporary directory)")
    args = p.parse_args(argv)
    device = common.parse_device(p, args.device)
    torch.set_num_threads(args.threads)
    common.CLOCK["name"] = args.clock
    cfg = dict(CONFIGS[device.type])
    n1, n2 = args.decode_tokens
    repeats = 3
    if common.quick():
        cfg.update(d_model=16, n_layer=1, vocab=32, batch=2, seqlen=16, mamba2=dict(headdim=8, d_state=8, chunk_size=8))
        n1, n2, repeats = 2, 4, 1
    out = args.out or common.default_out(device)
    rows = []
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seqlen"] + 1), generator=g).to(device)
    prompt = torch.randint(0, cfg["vocab"], (1, 16), generator=g).to(device)
    for lib in args.libs:
        kind = "ours" if lib.startswith("ours") else lib.removesuffix("_mamba2")
        layer = "Mamba2" if lib.endswith("_mamba2") else "Mamba1"
        if kind != "ours" and not approaches.available(kind):
            continue
        fast_scan.set_scan_compile(lib == "ours_compiled")
        row = dict(lib=lib, config=cfg["name"])
        if args.deadline and time.time() > args.deadline:
            rows.append(dict(row, status="skipped: out of time"))
            continue
        try:
            model = build(kind, cfg, device, layer).train()
            row["params_m"] = round(sum(q.numel() for q in model.parameters()) / 1e6, 2)

            def step():
                model.zero_grad(set_to_none=True)
                train_step(kind, model, ids)

            res = common.measure(step, device, warmup=2, repeats=repeats, budget_s=20.0)
            row["train"] = res
            if "ms" in res:
                row["train_tokens_per_s"] = cfg["batch"] * cfg["seqlen"] / (res["ms"] / 1e3)
            model.eval()
            if lib != "ours_compiled":  # decoding uses the step path, never the compiled scan
                t = {}
                for new in (n1, n2):
                    t[new] = common.measure(lambda: decode(kind, model, prompt, new), device,
                                            warmup=1, repeats=repeats, memory=False)
                if all("ms" in v for v in t.values()):
                    row["decode_ms_per_token"] = (t[n2]["ms"] - t[n1]["ms"]) / (n2 - n1)
            del model
        except Exception as err:  # noqa: BLE001  (record and go on to the next library)
            row["status"] = f"error: {type(err).__name__}: {str(err)[:200]}"
        fast_scan.set_scan_compile(False)
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "train"},
              flush=True)
    common.write_results(out, f"model-{device.type}", dict(machine=common.machine_info(device),
                                                           config=cfg, rows=rows))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
