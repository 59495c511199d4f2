"""Evaluation (Tables 2–5): register test pairs with a method, score them at the original resolution, and write
``results/eval/{method}/{io}/{dataset}.csv`` (:mod:`mgicon.evaluate.runner`).

Methods (:mod:`mgicon.evaluate.methods`): trained variants and released checkpoints, with or without instance
optimization; ANTsPy SyN (:mod:`mgicon.evaluate.ants_syn`); the identity and the synthetic ground truth as references.
Scores (:mod:`mgicon.evaluate.scoring`): Dice, mTRE in mm, % negative Jacobian.
"""

from mgicon.evaluate.methods import Method, MethodError, Registered, make_method
from mgicon.evaluate.runner import evaluate_pairs, select_pairs, summary_metrics
from mgicon.evaluate.scoring import Scores, score
from mgicon.vocabulary import EVAL_COLUMNS, IO_SETTINGS, METHOD_KINDS, PAIR_KEY

__all__ = [
    "EVAL_COLUMNS",
    "IO_SETTINGS",
    "METHOD_KINDS",
    "Method",
    "MethodError",
    "PAIR_KEY",
    "Registered",
    "Scores",
    "evaluate_pairs",
    "make_method",
    "score",
    "summary_metrics",
    "select_pairs",
]
