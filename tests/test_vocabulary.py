"""The vocabulary is the one definition of the project's words: the schema's enums, the rules' wildcard
constraints, the tables' and figures' labels and the library's word lists all agree with it, and a fold is
``det J < 0``."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from mgicon import vocabulary as v
from mgicon.config import load_schema
from mgicon.data.manifest import read_csv, write_csv
from tests.paths import REPO, SNAKEFILE

# ----------------------------------------------------------------------------------------------- schema enums

#: schema path (``*``: any key, ``[]``: an array's items) → the vocabulary's words, in order
SCHEMA_ENUMS = {
    "variants.*.similarity": v.SIMILARITIES,
    "variants.*.randomization": v.RANDOMIZATIONS,
    "variants.*.io[]": v.IO_SETTINGS,
    "evaluation.baselines[]": v.BASELINES,
    "evaluation.io[]": v.IO_SETTINGS,
    "evaluation.affine_metric": v.AFFINE_METRICS,
    "datasets.*.pairing": v.PAIRINGS,
    "datasets.*.stages[]": v.DATA_STAGES,
    "datasets.*.evaluation.metric": v.DATASET_METRICS,
    "datasets.*.source.split": v.SPLITS,
    "learn2reg.splits[]": v.LEARN2REG_SPLITS,
    "learn2reg.io": v.IO_SETTINGS,
}
#: enums that name no vocabulary word (network presets, a variant's modality choice, data-source kinds)
OTHER_ENUMS = {"network.preset", "variants.*.modalities", "datasets.*.source.kind"}


def _enums(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every schema node with an ``enum``, by its dotted path."""
    if not isinstance(node, dict):
        return
    if "enum" in node:
        yield path, node
    join = f"{path}." if path else ""
    for key, child in (node.get("properties") or {}).items():
        yield from _enums(child, join + key)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _enums(node["additionalProperties"], join + "*")
    if isinstance(node.get("items"), dict):
        yield from _enums(node["items"], path + "[]")


def _schema_node(path: str) -> dict:
    node = load_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


def test_every_schema_enum_is_classified_and_vocabulary_enums_equal_the_vocabulary():
    enums = dict(_enums(load_schema()))
    assert set(enums) == set(SCHEMA_ENUMS) | OTHER_ENUMS, "a new schema enum: name its vocabulary tuple here"
    for path, words in SCHEMA_ENUMS.items():
        assert tuple(enums[path]["enum"]) == words, path


def test_schema_defaults_and_keys_use_the_vocabulary():
    assert tuple(_schema_node("evaluation.io")["default"]) == v.IO_SETTINGS
    assert set(_schema_node("evaluation.baselines")["default"]) <= set(v.BASELINES)
    assert tuple(_schema_node("training.steps")["properties"]) == v.TRAINING_STAGES


# -------------------------------------------------------------------------------------- wildcard constraints

RULE_FILES = [SNAKEFILE, *sorted((SNAKEFILE.parent / "rules").glob("*.smk"))]
GLOBAL = "(global)"
#: (rule, wildcard) → the vocabulary words its constraint accepts, and no other
WILDCARD_WORDS = {
    (GLOBAL, "stage"): (*v.DATA_STAGES, *v.TRAINING_STAGES),
    ("train_stage", "stage"): v.TRAINING_STAGES,
    ("baseline", "method"): v.BASELINES,
    ("baseline", "io"): (v.NOIO,),
    ("evaluate", "io"): v.IO_SETTINGS,
    ("learn2reg_split", "split"): v.LEARN2REG_SPLITS,
}
#: constraints built from the config (dataset and variant names, the evaluated networks)
CONFIG_WILDCARDS = {(GLOBAL, "dataset"), (GLOBAL, "variant"), ("evaluate", "method")}
#: the table number of ``figures/table{n}.png``
TABLE_WILDCARDS = {("summary_plot", "n")}
EVERY_WORD = {
    *v.IO_SETTINGS,
    *v.BASELINES,
    *v.PAPER_VARIANTS,
    v.ERRATUM_VARIANT,
    *v.METHOD_KINDS,
    *v.METRICS,
    *v.DATA_STAGES,
    *v.TRAINING_STAGES,
    *v.SIMILARITIES,
    *v.RANDOMIZATIONS,
    *v.PAIRINGS,
    *v.SPLITS,
    *v.LEARN2REG_SPLITS,
    *(f"{v.RELEASED_PREFIX}{m}" for m in v.RELEASED_MODELS),
    *map(str, v.TABLES),
    # near misses a loose pattern would let through
    "",
    "io",
    "io-",
    "io-lncc",
    "noio2",
    "stage",
    "stage3",
    "ground",
    "truth",
    "identity-syn",
    "noio|io-mind",
}


def _vocabulary_names() -> dict[str, Any]:
    """The names the rules see: the vocabulary's, under the aliases of common.smk's import."""
    text = (SNAKEFILE.parent / "rules" / "common.smk").read_text(encoding="utf-8")
    block = re.search(r"^from mgicon\.vocabulary import \([^)]*\)", text, re.M)
    assert block, "common.smk imports the vocabulary"
    names = {"re": re}
    for alias in ast.parse(block.group(0)).body[0].names:
        names[alias.asname or alias.name] = getattr(v, alias.name)
    return names


def _constraints() -> dict[tuple[str, str], ast.expr]:
    """Every ``wildcard_constraints`` entry of the workflow, by (rule or :data:`GLOBAL`, wildcard)."""
    found: dict[tuple[str, str], ast.expr] = {}
    for path in RULE_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        rule = GLOBAL
        for i, line in enumerate(lines):
            if re.match(r"\S", line):  # a top-level line: a rule, or global code
                match = re.match(r"(?:local)?rule (\w+):", line)
                rule = match.group(1) if match else GLOBAL
            if line.strip() != "wildcard_constraints:":
                continue
            indent = len(line) - len(line.lstrip())
            body = []
            for entry in lines[i + 1 :]:
                if entry.strip() and len(entry) - len(entry.lstrip()) <= indent:
                    break
                body.append(entry.strip())
            call = ast.parse(f"dict({' '.join(body)})", mode="eval").body
            for keyword in call.keywords:
                key = (rule if indent else GLOBAL, keyword.arg)
                assert key not in found, f"{path.name}: {key} constrained twice"
                found[key] = keyword.value
    return found


def test_every_wildcard_constraint_is_known():
    assert set(_constraints()) == set(WILDCARD_WORDS) | CONFIG_WILDCARDS | TABLE_WILDCARDS


@pytest.mark.parametrize("key", sorted(WILDCARD_WORDS))
def test_wildcard_constraints_accept_exactly_the_vocabulary_words(key):
    expression = _constraints()[key]
    pattern = eval(compile(ast.Expression(expression), "<constraint>", "eval"), _vocabulary_names())
    accepted = {w for w in EVERY_WORD if re.fullmatch(pattern, w)}
    assert accepted == set(WILDCARD_WORDS[key]), f"{key}: {pattern!r}"


def test_config_built_constraints_need_the_config_and_the_table_number_is_a_number():
    constraints = _constraints()
    for key in CONFIG_WILDCARDS:
        with pytest.raises(NameError):  # built from the config (REGISTRY, config, network_methods()), not words
            eval(compile(ast.Expression(constraints[key]), "<constraint>", "eval"), _vocabulary_names())
    pattern = eval(compile(ast.Expression(constraints[("summary_plot", "n")]), "<c>", "eval"), _vocabulary_names())
    assert {w for w in EVERY_WORD if re.fullmatch(pattern, w)} == set(map(str, v.TABLES))


# ------------------------------------------------------------------------------------------- printed labels


def _eval_rows(method: str, io: str, dataset: str) -> list[dict[str, Any]]:
    """Two scored pairs of ``dataset`` (``brain``: Dice; ``lung``: landmarks)."""
    dice = dataset == "brain"
    modality = "t1w" if dice else "ct"
    rows = []
    for i, value in enumerate((0.6, 0.7) if dice else (2.0, 3.0)):
        rows.append(
            {
                "method": method,
                "io": io,
                "dataset": dataset,
                "moving_subject": f"a{i}",
                "moving_timepoint": "0",
                "moving_modality": modality,
                "fixed_subject": f"b{i}",
                "fixed_timepoint": "0",
                "fixed_modality": modality,
                "masked": "0",
                "metric": v.DICE if dice else v.LANDMARKS,
                "dice": value if dice else "",
                "mtre": "" if dice else value,
                v.NEGATIVE_JACOBIAN: 0.01 * i,
                "initial_dice": "",
                "initial_mtre": "",
                "seconds": "0.1",
            }
        )
    return rows


NETWORKS = (*v.PAPER_VARIANTS, v.ERRATUM_VARIANT, *(f"{v.RELEASED_PREFIX}{m}" for m in v.RELEASED_MODELS))
TABLE_CONFIG = {
    "datasets": {
        "brain": {
            "region": "Brain",
            "modalities": ["t1w"],
            "pairing": "inter",
            "stages": ["test"],
            "table": 2,
            "evaluation": {"metric": v.DICE},
        },
        "lung": {
            "region": "Lung",
            "modalities": ["ct"],
            "pairing": "intra",
            "stages": ["test"],
            "table": 2,
            "evaluation": {"metric": v.LANDMARKS},
        },
    },
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """The tables stage run on every method in every setting it has (baselines w/o IO only)."""
    from mgicon.tables import build_tables

    tmp = tmp_path_factory.mktemp("tables")
    paths = []
    runs = [(m, v.NOIO) for m in v.BASELINES] + [(m, io) for m in NETWORKS for io in v.IO_SETTINGS]
    for method, io in runs:
        for dataset in TABLE_CONFIG["datasets"]:
            path = tmp / "eval" / method / io / f"{dataset}.csv"
            write_csv(_eval_rows(method, io, dataset), path, v.EVAL_COLUMNS)
            paths.append(path)
    build_tables(paths, TABLE_CONFIG, tmp / "tables")
    return tmp / "tables"


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_the_tables_print_the_vocabulary_labels(tables):
    lines = (tables / "table2.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| IO |"))
    metric_row, body = _md_cells(lines[header + 2]), [_md_cells(line) for line in lines[header + 3 :] if line]
    assert metric_row[:2] == ["", ""]
    assert metric_row[2:] == [
        v.METRIC_LABELS[m] for m in (v.DICE, v.NEGATIVE_JACOBIAN, v.LANDMARKS, v.NEGATIVE_JACOBIAN)
    ]
    assert [c[0] for c in body if c[0]] == [v.IO_LABELS[io] for io in v.IO_SETTINGS]
    released = {v.RELEASED_LABEL.format(v.METHOD_LABELS[m]) for m in v.RELEASED_MODELS}
    assert {c[1] for c in body} == set(v.METHOD_LABELS.values()) | released
    summary = read_csv(tables / "summary.csv")
    assert {r["metric"] for r in summary} == set(v.METRICS)
    assert {r["io"] for r in summary} == set(v.IO_SETTINGS)


def test_the_latex_table_prints_the_vocabulary_labels(tables):
    from mgicon.tables.render import tex_escape

    tex = (tables / "table2.tex").read_text(encoding="utf-8")
    for label in (*v.METRIC_LABELS.values(), *v.IO_LABELS.values(), *v.METHOD_LABELS.values()):
        assert tex_escape(label) in tex, label


def test_the_summary_plot_labels_its_axes_with_the_table_metric_labels(tables, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from mgicon.tables import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    figures.summary_plot(read_csv(tables / "summary.csv"), tmp_path / "plot.png")
    labels = {ax.get_ylabel() for ax in drawn[0].axes if ax.get_visible() and ax.get_ylabel()}
    assert labels == {v.METRIC_LABELS[v.DICE], v.METRIC_LABELS[v.LANDMARKS]}


# -------------------------------------------------------------------------------- no copies of the word lists

SOURCES = [
    p
    for d in ("mgicon", "benchmarks", "workflow/scripts")
    for p in sorted((REPO / d).rglob("*.py"))
    if p != Path(v.__file__)
]
WORD_LISTS = {
    "IO_SETTINGS": v.IO_SETTINGS,
    "BASELINES": v.BASELINES,
    "METHOD_KINDS": v.METHOD_KINDS,
    "PAPER_VARIANTS": v.PAPER_VARIANTS,
    "DATASET_METRICS": v.DATASET_METRICS,
    "DATA_STAGES": v.DATA_STAGES,
    "TRAINING_STAGES": v.TRAINING_STAGES,
    "SIMILARITIES": v.SIMILARITIES,
    "RANDOMIZATIONS": v.RANDOMIZATIONS,
    "PAIRINGS": v.PAIRINGS,
}
#: "SyN" is also ANTs's name of the transform (``type_of_transform="SyN"``)
LABELS = (set(v.METRIC_LABELS.values()) | set(v.IO_LABELS.values()) | set(v.METHOD_LABELS.values())) - {"SyN"}
#: word lists that are maps to what the words stand for, checked against the vocabulary below
ALLOWED = {("mgicon/losses.py", "SIMILARITIES"), ("mgicon/weights.py", "PAPER_VARIANTS")}


def _copies(path: Path) -> Iterator[str]:
    """Literal collections naming two or more words of one vocabulary list, and label strings, in ``path``."""
    name = path.relative_to(REPO).as_posix()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [k for k in node.keys if k is not None]
        else:
            if isinstance(node, ast.Constant) and node.value in LABELS:
                yield f"{name}:{node.lineno}: label {node.value!r}"
            continue
        words = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        for list_name, vocabulary in WORD_LISTS.items():
            if len(words & set(vocabulary)) >= 2 and (name, list_name) not in ALLOWED:
                yield f"{name}:{node.lineno}: {sorted(words & set(vocabulary))} (use vocabulary.{list_name})"


def test_no_module_copies_a_word_list_or_a_label():
    assert SOURCES and [c for p in SOURCES for c in _copies(p)] == []


def test_the_maps_keyed_by_words_cover_exactly_the_vocabulary():
    from mgicon import losses, weights
    from mgicon.evaluate.methods import make_method
    from mgicon.tables.layout import LOWER_IS_BETTER, METRIC_FIELDS

    assert tuple(losses.SIMILARITIES) == v.SIMILARITIES
    assert tuple(weights.RELEASE_URLS) == v.RELEASED_MODELS
    assert set(v.IO_SIMILARITY.values()) - {None} <= set(v.SIMILARITIES)
    assert tuple(METRIC_FIELDS) == tuple(LOWER_IS_BETTER) == tuple(v.METRIC_LABELS) == v.METRICS
    assert tuple(v.STAGE_DATA) == v.TRAINING_STAGES and set(v.STAGE_DATA.values()) <= set(v.DATA_STAGES)
    assert set(v.METHOD_LABELS) >= {*v.BASELINES, *v.PAPER_VARIANTS, v.ERRATUM_VARIANT, *v.RELEASED_MODELS}
    for kind in (v.IDENTITY, v.GROUND_TRUTH, v.SYN):
        assert make_method(kind, kind).kind == kind
    assert v.EVAL_COLUMNS[2 : 2 + len(v.PAIR_KEY)] == v.PAIR_KEY


# ------------------------------------------------------------------------------------------------------ folds


def test_is_fold_counts_negative_determinants_only():
    det = np.ones((2, 3, 4))
    det[0, 0, 0] = -0.5  # folded
    det[1, 2, 3] = 0.0  # degenerate, not folded
    folds = v.is_fold(det)
    assert folds.dtype == bool and folds.sum() == 1 and folds[0, 0, 0] and not folds[1, 2, 3]
    assert v.is_fold(torch.from_numpy(det)).sum().item() == 1


def test_a_zero_determinant_is_no_fold_in_the_metrics():
    from mgicon import metrics

    u = np.zeros((3, 4, 4, 4))
    u[0] = -np.arange(4).reshape(-1, 1, 1)  # du0/dx0 = -1 exactly: det = 0 everywhere
    assert np.all(metrics.jacobian_determinant_physical(u) == 0)
    assert metrics.negative_jacobian_percent_physical(u) == 0.0


def test_every_fold_count_calls_is_fold(monkeypatch):
    from mgicon import metrics
    from mgicon.evaluate import scoring
    from mgicon.io.itk import identity_transform
    from mgicon.maps import identity_grid
    from mgicon.tables import figures
    from mgicon.testing import make_image

    calls = []

    def counted(det):
        calls.append(type(det).__name__)
        return v.is_fold(det)

    for module in (metrics, scoring, figures):
        monkeypatch.setattr(module, "is_fold", counted)
    image = make_image(np.zeros((6, 6, 6), dtype=np.float32))
    metrics.negative_jacobian_percent(identity_grid((5, 5, 5)))
    metrics.negative_jacobian_percent_physical(np.zeros((3, 4, 4, 4)))
    scoring.pair_negative_jacobian(identity_transform(), image)
    assert not figures.panel_data(image, image, identity_transform())["folds"].any()
    assert calls == ["Tensor", "ndarray", "ndarray", "ndarray"]
