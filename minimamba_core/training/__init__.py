"""Training: the loop, the Tiny Shakespeare data, the paper's synthetic tasks. Not the lesson.

* ``loop.py``: ``train``, ``evaluate``, ``lm_loss``, the learning-rate schedule;
* ``data.py``: Tiny Shakespeare, a character vocabulary, windows, n-gram baselines;
* ``tasks.py``: selective copying, induction heads, the LTI ablation (``LTIMixer``);
* ``mqar.py``: multi-query associative recall (Zoology), by name through ``tasks.make_batch`` too.
"""

from .data import IGNORE_INDEX, CharVocab, load_text
from .loop import History, evaluate, lm_loss, lr_at, param_groups, steps_for_budget, train
from .mqar import mqar
from .tasks import TASKS, LTIMixer, make_batch, task_model

__all__ = ["IGNORE_INDEX", "TASKS", "CharVocab", "History", "LTIMixer", "evaluate", "lm_loss", "load_text",
           "lr_at", "make_batch", "mqar", "param_groups", "steps_for_budget", "task_model", "train"]
