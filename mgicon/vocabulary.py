"""The project's words, each defined once: IO settings, methods, metrics, stages, tables, and what a fold is.

Every module, rule and schema enum that names one of these words takes it from here (``tests/test_vocabulary.py``
checks the schema enums, the rules' wildcard constraints and the tables' labels against this module).  Tuples are in
the order the tables print them.  This module imports nothing of the project, so every layer may import it.

* IO settings (evaluation): ``noio`` (the network's prediction), ``io-lncc2`` (instance optimization under
  1 − LNCC²), ``io-mind`` (under MIND-SSC); the affine pre-alignment's metric rules ``auto``, ``mi``, ``gc``.
* Methods: the baselines (``identity``, ``syn``, ``ground-truth``), the paper's variants (Sec. 4, configured under
  ``variants:``), the Erratum's bugged variant, and released checkpoints evaluated as ``released-<model>``.
* Metrics: a test dataset scores ``dice`` or ``landmarks`` (mTRE); every method also scores
  ``negative_jacobian_percent``, the share of folded voxels (:func:`is_fold`).
* Stages: a dataset serves the data stages ``pretrain``, ``finetune``, ``test``; a variant trains in the training
  stages ``stage1``, ``stage2`` (pretraining data) or ``finetune`` (finetuning data).
"""

from __future__ import annotations

from typing import TypeVar

# ------------------------------------------------------------------------------------------------ IO settings

NOIO = "noio"
#: IO setting → similarity of the instance optimization (None: the network's prediction), in table order
IO_SIMILARITY: dict[str, str | None] = {NOIO: None, "io-lncc2": "lncc2", "io-mind": "mind"}
IO_SETTINGS: tuple[str, ...] = tuple(IO_SIMILARITY)
#: the settings that run instance optimization
IO_OPTIMIZED: tuple[str, ...] = tuple(io for io, similarity in IO_SIMILARITY.items() if similarity)
IO_LABELS: dict[str, str] = {NOIO: "w/o IO", "io-lncc2": "1-LNCC²", "io-mind": "MIND-SSC"}
#: similarity names of training (``variants.*.similarity``) and of instance optimization
LNCC, LNCC2, MIND = "lncc", "lncc2", "mind"
SIMILARITIES: tuple[str, ...] = (LNCC, LNCC2, MIND)
#: loss-randomization modes of a variant (Sec. 3.2, :mod:`mgicon.data.sampler`): none, one shared, one per side
RANDOMIZATIONS: tuple[str, ...] = ("B", "F", "R")

#: the metric rule of the ANTs affine pre-alignment (``--affine-metric``, ``evaluation.affine_metric``): ``auto``
#: (mutual information, then a global-correlation refinement where it keeps the mutual information,
#: :func:`mgicon.register.affine_prealign`), or one metric alone: Mattes mutual information or global correlation
AFFINE_AUTO, AFFINE_MI, AFFINE_GC = "auto", "mi", "gc"
AFFINE_METRICS: tuple[str, ...] = (AFFINE_AUTO, AFFINE_MI, AFFINE_GC)

# ---------------------------------------------------------------------------------------------------- methods

IDENTITY, SYN, GROUND_TRUTH = "identity", "syn", "ground-truth"
BASELINES: tuple[str, ...] = (IDENTITY, SYN, GROUND_TRUTH)
#: the kinds of method behind one interface (:mod:`mgicon.evaluate.methods`); a variant or released model is a network
NETWORK = "network"
METHOD_KINDS: tuple[str, ...] = (IDENTITY, GROUND_TRUTH, SYN, NETWORK)
PAPER_VARIANTS: tuple[str, ...] = (
    "unigradicon",
    "unigradicon-lncc2",
    "multigradicon-b",
    "multigradicon-f",
    "multigradicon-r",
    "multigradicon",
)
ERRATUM_VARIANT = "multigradicon-f-erratum"
RELEASED_PREFIX = "released-"
UNIGRADICON, MULTIGRADICON = "unigradicon", "multigradicon"  # upstream's released models
RELEASED_MODELS: tuple[str, ...] = (UNIGRADICON, MULTIGRADICON)
METHOD_LABELS: dict[str, str] = {
    IDENTITY: "Identity (unregistered)",
    GROUND_TRUTH: "Ground truth (synthetic)",
    SYN: "SyN",
    "unigradicon": "uniGradICON",
    "unigradicon-lncc2": "uniGradICON-LNCC²",
    "multigradicon-b": "multiGradICON-B",
    "multigradicon-f": "multiGradICON-F",
    "multigradicon-r": "multiGradICON-R",
    "multigradicon": "multiGradICON",
    ERRATUM_VARIANT: "multiGradICON-F (Erratum's bug)",
}
RELEASED_LABEL = "{} (released)"

# ---------------------------------------------------------------------------------------------------- metrics

DICE, LANDMARKS, NEGATIVE_JACOBIAN = "dice", "landmarks", "negative_jacobian_percent"
#: a test dataset's own metric (``datasets.*.evaluation.metric``)
DATASET_METRICS: tuple[str, ...] = (DICE, LANDMARKS)
METRICS: tuple[str, ...] = (*DATASET_METRICS, NEGATIVE_JACOBIAN)
#: the tables' headings (the paper's spelling), also the figures' axis labels
METRIC_LABELS: dict[str, str] = {DICE: "DICE(%)", LANDMARKS: "mTRE", NEGATIVE_JACOBIAN: "% J<0"}
#: the evaluation-CSV column holding each metric's per-pair score (Dice as a fraction, mTRE in mm, % J<0)
METRIC_COLUMNS: dict[str, str] = {DICE: "dice", LANDMARKS: "mtre", NEGATIVE_JACOBIAN: NEGATIVE_JACOBIAN}

# ----------------------------------------------------------------------------------------------------- stages

PRETRAIN, FINETUNE, TEST = "pretrain", "finetune", "test"
DATA_STAGES: tuple[str, ...] = (PRETRAIN, FINETUNE, TEST)
STAGE1, STAGE2 = "stage1", "stage2"
TRAINING_STAGES: tuple[str, ...] = (STAGE1, STAGE2, FINETUNE)
#: training stage → the data stage whose pairs it trains on
STAGE_DATA: dict[str, str] = {STAGE1: PRETRAIN, STAGE2: PRETRAIN, FINETUNE: FINETUNE}
#: the objective's terms a training job logs every step (MLflow metric names), and how the figures label them
SIMILARITY_TERM, GRADICON_TERM = "similarity", "gradicon"
TRAINING_TERMS: dict[str, str] = {SIMILARITY_TERM: "similarity loss", GRADICON_TERM: "GradICON term"}

# ---------------------------------------------------------------------------------------- tables, data, pairs

#: the paper's result tables (post-erratum)
TABLES: tuple[int, ...] = (2, 3, 4, 5)
#: how a dataset's scans are paired (``datasets.*.pairing``)
PAIRINGS: tuple[str, ...] = ("intra", "inter", "atlas")
#: a scan's split in a manifest
SPLITS: tuple[str, ...] = ("train", TEST)
#: the splits of a Learn2Reg dataset json's registration pairs (``registration_val``, ``registration_test``)
LEARN2REG_SPLITS: tuple[str, ...] = ("val", TEST)
#: the columns identifying one registered pair of an evaluation (the methods are paired on it)
PAIR_KEY: tuple[str, ...] = (
    "dataset",
    "moving_subject",
    "moving_timepoint",
    "moving_modality",
    "fixed_subject",
    "fixed_timepoint",
    "fixed_modality",
    "masked",
)
#: the columns of an evaluation CSV (``results/eval/{method}/{io}/{dataset}.csv``), in the order written
EVAL_COLUMNS: tuple[str, ...] = (
    "method",
    "io",
    *PAIR_KEY,
    "metric",
    *METRIC_COLUMNS.values(),
    "initial_dice",
    "initial_mtre",
    "seconds",
)
#: the columns identifying one table cell (summary.csv, the published numbers)
CELL_KEY: tuple[str, ...] = (
    "table",
    "dataset",
    "column_label",
    "moving_modality",
    "fixed_modality",
    "masked",
    "metric",
    "io",
    "method",
)

# ------------------------------------------------------------------------------------------------------- folds

Det = TypeVar("Det")


def is_fold(det: Det) -> Det:
    """Where a transform folds: its Jacobian determinant is negative (the paper's "% J<0"; ``det == 0`` is not).

    ``det`` is an array or tensor of determinants (numpy or torch); the result is a boolean one of the same kind.
    """
    return det < 0  # type: ignore[operator]
