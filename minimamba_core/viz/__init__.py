"""Plot functions behind the notebooks' figures and widgets (needs the ``notebooks`` extra).

Every plot function is a plain function of its slider values that returns ``(fig, data)``:
``data`` is a dict of the arrays drawn, so tests assert on numbers rather than pixels, and a
notebook shows a static call before the widget so it reads on GitHub, where widgets do not render.
:func:`widget` wires a function to ``ipywidgets.interact``.

One module per lesson group: ``intro`` (notebook 00), ``ssm`` (notebooks 01, 02), ``hippo``
(01: HiPPO and the initialization of ``A``), ``projections`` (02: ``B`` and ``C``), ``scan``
(03, 04), ``block`` and ``diagram`` (05), ``lm`` (06, 07), ``sampling`` (10), ``training`` (08, 09),
``selection`` (08, 09), ``benchmarks`` (11 and ``benchmarks/report.py``), ``ssd`` (12), ``mamba2``
(13), ``mamba3`` (15); ``widgets`` holds :func:`widget` and the argument checks.
"""

from .benchmarks import benchmark_series, benchmark_table, loglog_slope, plot_benchmark, plot_loglog
from .block import SCRUB_MODELS, SCRUB_TEXT, mixer_scrub_example, mixer_selection, plot_mixer_scrub
from .diagram import BLOCKS, plot_block_diagram
from .hippo import (
    A_INITS,
    HIPPO_SIGNALS,
    hippo_signal,
    init_A,
    legendre_reconstruct,
    legs_matrices,
    legs_states,
    plot_hippo_reconstruction,
    plot_memory_horizons,
)
from .intro import plot_state_evolution, scalar_ssm
from .lm import plot_cache_memory, plot_decode_error, plot_dt_init, plot_param_breakdown, plot_time_per_token
from .mamba2 import CHUNK_STEPS, chunked_factors, plot_chunked_steps, plot_loss_comparison, plot_parameter_split
from .mamba3 import STEP_RULES, plot_discretization_error, plot_parity, plot_rotation
from .projections import plot_write_read, state_bump, write_read
from .sampling import plot_generation_controls, plot_sampling
from .selection import (
    CHAR_GROUPS,
    TASK_NAMES,
    char_groups,
    delta_ratio,
    plot_delta_by_group,
    plot_selection_trace,
    plot_text_delta,
    selection_trace,
    token_groups,
)
from .scan import (
    SCAN_ALGORITHMS,
    combine_ranges,
    level_slider,
    plot_scan_trace,
    plot_scan_tree,
    run_schedule,
    scan_depth,
    scan_schedule,
    scan_trace_example,
)
from .ssd import RANK_RTOL, block_singular_values, chunk_boundaries, plot_ssd_matrix, ssd_matrix_example
from .ssm import (
    B_BAR_RULES,
    DISCRETIZATIONS,
    SELECTION_SIGNALS,
    diagonal_ssm_states,
    discretize_scalar,
    plot_discretization,
    plot_selection,
    selection_signal,
)
from .training import (
    plot_accuracy_curves,
    plot_bigram,
    plot_length_generalization,
    plot_loss_curves,
    plot_task_example,
)
from .widgets import NOOP_ENV, widget

__all__ = [
    "A_INITS",
    "HIPPO_SIGNALS",
    "hippo_signal",
    "init_A",
    "legendre_reconstruct",
    "legs_matrices",
    "legs_states",
    "plot_hippo_reconstruction",
    "plot_memory_horizons",
    "plot_state_evolution",
    "plot_write_read",
    "scalar_ssm",
    "state_bump",
    "write_read",
    "BLOCKS",
    "B_BAR_RULES",
    "CHUNK_STEPS",
    "DISCRETIZATIONS",
    "NOOP_ENV",
    "RANK_RTOL",
    "SCAN_ALGORITHMS",
    "SCRUB_MODELS",
    "SCRUB_TEXT",
    "STEP_RULES",
    "SELECTION_SIGNALS",
    "benchmark_series",
    "benchmark_table",
    "block_singular_values",
    "chunk_boundaries",
    "chunked_factors",
    "combine_ranges",
    "diagonal_ssm_states",
    "discretize_scalar",
    "level_slider",
    "loglog_slope",
    "mixer_scrub_example",
    "mixer_selection",
    "plot_accuracy_curves",
    "plot_benchmark",
    "plot_bigram",
    "plot_block_diagram",
    "plot_chunked_steps",
    "plot_cache_memory",
    "plot_decode_error",
    "plot_discretization",
    "plot_discretization_error",
    "plot_dt_init",
    "plot_generation_controls",
    "plot_length_generalization",
    "plot_loglog",
    "plot_loss_comparison",
    "plot_loss_curves",
    "plot_mixer_scrub",
    "plot_param_breakdown",
    "plot_parameter_split",
    "plot_parity",
    "plot_rotation",
    "plot_sampling",
    "plot_scan_trace",
    "plot_scan_tree",
    "plot_selection",
    "plot_ssd_matrix",
    "plot_task_example",
    "plot_time_per_token",
    "run_schedule",
    "scan_depth",
    "scan_schedule",
    "scan_trace_example",
    "selection_signal",
    "ssd_matrix_example",
    "widget",
    "TASK_NAMES",
    "CHAR_GROUPS",
    "char_groups",
    "delta_ratio",
    "plot_delta_by_group",
    "plot_text_delta",
    "plot_selection_trace",
    "selection_trace",
    "token_groups",
]
