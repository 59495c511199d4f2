"""Evaluation (Tables 2–5): register test pairs with a method, score them at the original resolution, and write
``results/eval/{method}/{io}/{dataset}.csv`` (:mod:`mgicon.evaluate.runner`).

Methods (:mod:`mgicon.evaluate.methods`): trained variants and released checkpoints, with or without instance
optimization; ANTsPy SyN (:mod:`mgicon.evaluate.syn`); the identity and the synthetic ground truth as references.
Scores (:mod:`mgicon.evaluate.scoring`): Dice, mTRE in mm, % negative Jacobian.
"""

from mgicon.evaluate.methods import IO_SETTINGS, KINDS, Method, MethodError, Registered, make_method
from mgicon.evaluate.runner import EVAL_COLUMNS, PAIR_KEY, evaluate_pairs, summary_metrics, select_pairs
from mgicon.evaluate.scoring import Scores, score

__all__ = [
    "EVAL_COLUMNS", "IO_SETTINGS", "KINDS", "Method", "MethodError", "PAIR_KEY", "Registered", "Scores",
    "evaluate_pairs", "make_method", "score", "summary_metrics", "select_pairs",
]
