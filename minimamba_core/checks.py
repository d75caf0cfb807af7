"""Every guard of the public entry points, in one place: what a bad argument is told.

The lesson files call these at their doors (``scan.py``, ``model.py``, ``cache.py``,
``generate.py``) so that their own bodies show only the computation. Each raises ``TypeError``
or ``ValueError`` naming the argument, what was expected and how to fix it.
"""

from __future__ import annotations

import torch


def check_positive_int(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ``>= 1`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_float(name: str, t: torch.Tensor | None) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def scan_output_dtype(x) -> torch.dtype:
    """``x``'s dtype, after checking that ``x`` is a float tensor (the output has this dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_float("x", x)
    return x.dtype


def check_scan_inputs(x, delta, A, B, C, D, z, delta_bias, h0, check_finite) -> None:
    """The guard of ``selective_scan_*``: float tensors of the layout in ``scan.py``, one device.

    Raises:
        TypeError: a non-tensor or integer input.
        ValueError: a shape that does not match ``x (b, l, d_inner)`` and ``A (d_inner, d_state)``,
        mixed devices, or NaN/inf with ``check_finite``.
    """
    tensors = dict(x=x, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
    for name, t in tensors.items():
        check_float(name, t)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (b, l, d_inner), got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
    b, l, d = x.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must have shape (d_inner={d}, d_state), got {tuple(A.shape)}")
    n = A.shape[1]
    expected = dict(delta=(b, l, d), z=(b, l, d), B=(b, l, n), C=(b, l, n), D=(d,),
                    delta_bias=(d,), h0=(b, d, n))
    for name, shape in expected.items():
        t = tensors[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match x {tuple(x.shape)} and "
                             f"A {tuple(A.shape)}, got {tuple(t.shape)}")
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move all inputs to one device")
    if check_finite:
        for name, t in tensors.items():
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf (check_finite=True)")




def check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_states, chunk_size) -> None:
    """The guard of ``ssd_*``: the layout of ``mamba_chunk_scan_combined``, one device.

    ``x, z (b, l, h, p)``, ``dt (b, l, h)``, ``A (h,)``, ``B, C (b, l, g, n)`` with ``g`` dividing
    ``h``, ``D (h,)`` or ``(h, p)``, ``dt_bias (h,)``, ``initial_states (b, h, p, n)``.

    Raises:
        TypeError: a non-tensor or integer input.
        ValueError: another shape (naming the one expected), ``g`` not dividing ``h``, mixed
        devices, ``dt_limit`` not a pair ``0 <= lo <= hi``, a ``chunk_size`` that is not a
        positive int.
    """
    tensors = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states)
    for name, t in tensors.items():
        if t is None and name in ("x", "dt", "A", "B", "C"):
            raise TypeError(f"{name} must be a torch.Tensor, got None")
        check_float(name, t)
    check_positive_int("chunk_size", chunk_size)
    ok = (isinstance(dt_limit, (tuple, list)) and len(dt_limit) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in dt_limit))
    if not ok or not 0 <= dt_limit[0] <= dt_limit[1] or dt_limit[0] == float("inf"):
        raise ValueError(f"dt_limit must be a pair (lo, hi) with 0 <= lo <= hi and lo finite, got {dt_limit!r}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (b, l, nheads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if B.dim() != 4 or B.shape[:2] != (b, l):
        raise ValueError(f"B must have shape (b={b}, l={l}, ngroups, d_state), got {tuple(B.shape)}")
    g, n = B.shape[2], B.shape[3]
    if g == 0 or h % g != 0:
        raise ValueError(f"the number of groups of B and C (dim 2, {g}) must divide the number of heads of x "
                         f"(dim 2, {h}): each group serves nheads / ngroups heads")
    expected = dict(dt=[(b, l, h)], A=[(h,)], C=[(b, l, g, n)], D=[(h,), (h, p)], z=[(b, l, h, p)],
                    dt_bias=[(h,)], initial_states=[(b, h, p, n)])
    for name, shapes in expected.items():
        t = tensors[name]
        if t is not None and tuple(t.shape) not in shapes:
            want = " or ".join(str(s) for s in shapes)
            raise ValueError(f"{name} must have shape {want} to match x {tuple(x.shape)} and B "
                             f"{tuple(B.shape)}, got {tuple(t.shape)}")
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move all inputs to one device")


def check_input_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> None:
    """The guard of ``MambaLM.forward/step`` and ``generate``: ``(b, l)`` integer ids in ``[0, vocab_size)``.

    Raises:
        TypeError: not a tensor, or not integer ids.
        ValueError: not 2-d, empty, or ids out of range.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding indexes with
        raise TypeError(f"{name} must hold integer token ids as torch.long (or torch.int32), got dtype "
                        f"{input_ids.dtype}; convert with input_ids.long()")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seqlen), got {tuple(input_ids.shape)}; "
                         f"use input_ids[None] for a single sequence")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} must lie in [0, vocab_size={vocab_size}), "
                         f"got values in [{lo}, {hi}]")


def check_attention_mask(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Validate a left-padding mask; return it as bool ``(b, l)``, True on real tokens.

    Raises:
        TypeError: not a tensor, or a float/complex dtype.
        ValueError: another shape or device than ``input_ids``, values other than 0/1, or
        padding that is not on the left.
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor (bool or 0/1 integers), "
                        f"got {type(attention_mask).__name__}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError(f"attention_mask must hold bool or 0/1 integers, got dtype {attention_mask.dtype}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.device != input_ids.device:
        raise ValueError(f"attention_mask is on {attention_mask.device} but input_ids on {input_ids.device}")
    if attention_mask.dtype != torch.bool and bool(((attention_mask != 0) & (attention_mask != 1)).any()):
        raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), got values "
                         f"{sorted(set(attention_mask.unique().tolist()))}")
    keep = attention_mask.bool()  # (b, l)
    bad = keep[:, :-1] & ~keep[:, 1:]  # (b, l-1), a token followed by padding
    if bool(bad.any()):
        row, pos = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"attention_mask must be left padding (each row 0...0 1...1), got row {row} "
                         f"with a token at position {pos} followed by padding; pad on the left "
                         f"(a causal model needs no mask for right padding)")
    return keep


def check_sampling(temperature, top_k, top_p, min_p, repetition_penalty) -> None:
    """The guard of the sampling settings of ``sample_next_token``, ``generate`` and the CLI (``ValueError``)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {top_p!r}")
    if not isinstance(min_p, (int, float)) or not 0 <= min_p < 1:
        raise ValueError(f"min_p must lie in [0, 1) (0 disables it), got {min_p!r}")
    if not isinstance(repetition_penalty, (int, float)) or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 disables it), got {repetition_penalty!r}")


def check_logits(logits, vocab_size, previous_ids) -> None:
    """The guard of ``sample_next_token``'s tensors: logits ``(b, V >= vocab_size)``, previous ids ``(b, l)``."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point torch.Tensor (b, V_padded), got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] < vocab_size:
        raise ValueError(f"logits must have shape (b >= 1, V_padded >= vocab_size={vocab_size}), got "
                         f"{tuple(logits.shape)}; take the last position with logits[:, -1]")
    if previous_ids is not None:
        if (not isinstance(previous_ids, torch.Tensor) or previous_ids.is_floating_point()
                or previous_ids.is_complex() or previous_ids.dtype == torch.bool):
            raise TypeError(f"previous_ids must be an integer tensor (b, t) of token ids, got "
                            f"{getattr(previous_ids, 'dtype', type(previous_ids).__name__)}")
        if previous_ids.dim() != 2 or previous_ids.shape[0] != logits.shape[0]:
            raise ValueError(f"previous_ids must have shape (b={logits.shape[0]}, t), got {tuple(previous_ids.shape)}")
        if previous_ids.numel() and not 0 <= int(previous_ids.min()) <= int(previous_ids.max()) < vocab_size:
            raise ValueError(f"previous_ids must lie in [0, vocab_size={vocab_size}), got values in "
                             f"[{int(previous_ids.min())}, {int(previous_ids.max())}]")


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: the CPU), refused when this PyTorch cannot use it.

    Raises:
        ValueError: not a device name; ``cuda`` without a visible CUDA GPU (or a CUDA build),
        ``mps`` without Apple's GPU, ``meta`` (no values), naming ``mm.pick_device()``.
    """
    try:
        device = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a device name such as 'cpu', 'cuda' or 'mps', got {device!r} ({err})") from None
    mps = getattr(torch.backends, "mps", None)
    usable = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps is not None and mps.is_available(),
              "meta": False}.get(device.type, True)
    if not usable:
        raise ValueError(f"device {str(device)!r} is not usable by this PyTorch ({torch.__version__}); "
                         f"mm.pick_device() picks the best available one")
    return device


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is an int ``>= 1`` (bools refused)."""
    check_positive_int("batch_size", batch_size)


def check_state_dtype(dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless ``dtype`` is float32 or float64 (states never live in half precision)."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cache dtype must be torch.float32 or torch.float64, got {dtype}")
