"""The widget wrapper and the argument checks shared by the plot modules.

:func:`widget` wires a plot function to ``ipywidgets.interact``; ``check_*`` raise the
``ValueError`` that names what a plot function expected.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np

# Environment switch for the browser test's failure check: when it names a plot function,
# that function's widget callback does nothing, so the browser test must report a dead widget.
NOOP_ENV = "MINIMAMBA_WIDGET_NOOP"


def widget(plot_fn: Callable[..., tuple[Any, dict]], **controls):
    """``ipywidgets.interact`` over ``plot_fn`` with inline matplotlib; ``controls`` as for interact.

    The figure is shown and closed on every call. Honours ``MINIMAMBA_WIDGET_NOOP`` (see above).
    Returns what ``interact`` returns: the wrapped callback, whose ``.widget`` is the ``interactive`` box.
    """
    import ipywidgets  # only a widget needs it: the plot functions run without it

    noop = os.environ.get(NOOP_ENV) == plot_fn.__name__

    def callback(**values):
        if noop:
            return None
        fig, _ = plot_fn(**values)
        plt.show()
        plt.close(fig)

    callback.__name__ = plot_fn.__name__
    return ipywidgets.interact(callback, **controls)


def check_choice(name: str, value, allowed: tuple) -> None:
    """Raise ValueError naming ``allowed`` unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_int(name: str, value, lo: int, hi: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


def check_positive(name: str, value) -> None:
    """Raise ValueError unless ``value`` is an int or float (not a bool) ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
