"""Typed records of the CSV rows that pass between stages: a scan, a test pair and an evaluation row.

A row is parsed once, where its file is read (:meth:`from_row`, :func:`read_records`); errors are
:class:`RecordError`, one line ``FILE:LINE: column: problem``.  :meth:`to_row` writes a record back as exactly the
strings the pipeline's files hold, so ``to_row(from_row(row)) == row`` for every row the pipeline writes:

* empty fields are ``None`` (absent file, metric not available), booleans are ``1``/``0``;
* floats are ``repr(float)`` (the shortest text that reads back to the same float), ``seconds`` four decimals;
* a scan's or a pair's columns keep the order (and the extra columns) of the row it was read from.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Iterable, Mapping, TypeVar

from mgicon.data.manifest import COLUMNS as MANIFEST_COLUMNS
from mgicon.data.manifest import read_csv
from mgicon.vocabulary import EVAL_COLUMNS, METRIC_COLUMNS, PAIR_KEY

#: the columns :mod:`mgicon.data.preprocess` adds to a manifest: the volumes on the network grid
NETWORK_COLUMNS = ("network_image", "network_label", "network_mask")
#: ... and the axis orientation (DICOM code, e.g. ``LPS``) of those volumes' voxel arrays
ORIENTATION_COLUMN = "orientation"
#: an evaluation row's numbers: the scores, the unregistered scores, the seconds
SCORE_COLUMNS = EVAL_COLUMNS[EVAL_COLUMNS.index("metric") + 1 :]
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")

R = TypeVar("R", bound="ScanRecord | PairRecord | EvalRecord")


class RecordError(ValueError):
    """A CSV row that cannot be read as its record; the message names the file, the line and the column."""


def _where(where: str, column: str) -> str:
    return f"{where}: {column}" if where else column


def _required(row: Mapping[str, Any], columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise RecordError(f"{where or 'row'}: missing column(s) {', '.join(missing)}")


def parse_bool(value: Any, column: str = "", where: str = "") -> bool:
    """``1``/``0`` (also ``true``/``false``/``yes``/``no``, empty = false) or a bool."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise RecordError(f"{_where(where, column)}: {value!r} is not 1 or 0")


def parse_float(value: Any, column: str = "", where: str = "") -> float | None:
    """A number, or None for an empty field (and NaN, which the files write as empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{_where(where, column)}: {value!r} is not a number") from None
    return None if math.isnan(number) else number


def optional_path(value: Any) -> str | None:
    """A file column: the path, or None when empty."""
    return str(value) if value not in (None, "") else None


def format_float(value: float | None) -> str:
    """``repr(float)``, or empty for None and NaN."""
    return "" if value is None or math.isnan(value) else repr(float(value))


def format_bool(value: bool) -> str:
    return "1" if value else "0"


def _text(value: str | None) -> str:
    return "" if value is None else value


@dataclass(frozen=True)
class ScanRecord:
    """One image of a manifest or ``preprocessed.csv`` row: the scan, its files (None: absent) and its split.

    ``orientation``: the axis orientation of the ``network_*`` volumes' arrays (None: not recorded; a
    ``preprocessed.csv`` written before the column existed holds the arrays as stored in ``image``).
    ``extra`` holds any other column (the synthetic suite's ground-truth fields), verbatim.
    """

    COLUMNS: ClassVar[tuple[str, ...]] = MANIFEST_COLUMNS

    dataset: str
    subject: str
    timepoint: str
    modality: str
    image: str
    label: str | None = None
    landmarks: str | None = None
    mask: str | None = None
    split: str = ""
    network_image: str | None = None
    network_label: str | None = None
    network_mask: str | None = None
    orientation: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)
    columns: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str]:
        """``(subject, timepoint, modality)``, how a pair names the scan."""
        return self.subject, self.timepoint, self.modality

    @property
    def name(self) -> str:
        return "/".join(p for p in self.key if p)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], where: str = "") -> ScanRecord:
        _required(row, cls.COLUMNS, where)
        if not row["image"]:
            raise RecordError(f"{_where(where, 'image')}: empty; every scan names its image")
        known = {*cls.COLUMNS, *NETWORK_COLUMNS, ORIENTATION_COLUMN}
        paths = {c: optional_path(row.get(c)) for c in ("label", "landmarks", "mask", *NETWORK_COLUMNS)}
        return cls(
            dataset=str(row["dataset"]),
            subject=str(row["subject"]),
            timepoint=str(row["timepoint"]),
            modality=str(row["modality"]),
            image=str(row["image"]),
            split=str(row["split"]),
            **paths,
            orientation=row.get(ORIENTATION_COLUMN) or None,
            extra={k: _text(v) for k, v in row.items() if k not in known},
            columns=tuple(row),
        )

    def to_row(self) -> dict[str, str]:
        """The CSV fields, in the columns of the row read (default: the manifest's, extras, the network's set)."""
        added = (*NETWORK_COLUMNS, ORIENTATION_COLUMN)
        fields = {c: _text(getattr(self, c)) for c in (*self.COLUMNS, *added)}
        columns = self.columns or (*self.COLUMNS, *self.extra, *(c for c in added if getattr(self, c) is not None))
        return {c: fields[c] if c in fields else self.extra.get(c, "") for c in columns}


@dataclass(frozen=True)
class PairRecord:
    """One registered pair: a test pair-list row (moving and fixed scan), masked or not.

    Pairs are equal when they name the same registration (:data:`~mgicon.vocabulary.PAIR_KEY`); the pair list's
    ``weight`` (None: not given) and the source row's columns do not take part.
    """

    COLUMNS: ClassVar[tuple[str, ...]] = PAIR_KEY[:-1]

    dataset: str
    moving_subject: str
    moving_timepoint: str
    moving_modality: str
    fixed_subject: str
    fixed_timepoint: str
    fixed_modality: str
    masked: bool = False
    weight: float | None = field(default=None, compare=False)
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    columns: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> tuple:
        """The :data:`~mgicon.vocabulary.PAIR_KEY` values (``masked`` a bool): pairs the methods for the tests."""
        return tuple(getattr(self, c) for c in PAIR_KEY)

    @property
    def multimodal(self) -> bool:
        return self.moving_modality != self.fixed_modality

    def scan_key(self, side: str) -> tuple[str, str, str]:
        """``(subject, timepoint, modality)`` of the ``moving`` or ``fixed`` scan (:attr:`ScanRecord.key`)."""
        return getattr(self, f"{side}_subject"), getattr(self, f"{side}_timepoint"), getattr(self, f"{side}_modality")

    def name(self, side: str) -> str:
        return "/".join(p for p in self.scan_key(side) if p)

    def with_masked(self, masked: bool) -> PairRecord:
        """The pair under one masking condition (its row gains a ``masked`` column at the end)."""
        columns = self.columns if not self.columns or "masked" in self.columns else (*self.columns, "masked")
        return replace(self, masked=bool(masked), columns=columns)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], where: str = "") -> PairRecord:
        _required(row, cls.COLUMNS, where)
        known = {*PAIR_KEY, "weight"}
        return cls(
            **{c: str(row[c]) for c in cls.COLUMNS},
            masked=parse_bool(row.get("masked"), "masked", where),
            weight=parse_float(row.get("weight"), "weight", where),
            extra={k: _text(v) for k, v in row.items() if k not in known},
            columns=tuple(row),
        )

    def to_row(self) -> dict[str, str]:
        """The CSV fields, in the columns of the row read (default: :data:`PAIR_KEY`, then ``weight``)."""
        fields = {c: getattr(self, c) for c in self.COLUMNS}
        fields.update(masked=format_bool(self.masked), weight=format_float(self.weight))
        columns = self.columns or (*PAIR_KEY, "weight")
        return {c: fields[c] if c in fields else self.extra.get(c, "") for c in columns}


@dataclass(frozen=True)
class EvalRecord:
    """One row of an evaluation CSV (``results/eval/{method}/{io}/{dataset}.csv``): a method's scores on a pair.

    Dice is a fraction, mTRE in mm, % J<0 in percent, the ``initial_*`` scores unregistered; None: not available.
    """

    COLUMNS: ClassVar[tuple[str, ...]] = EVAL_COLUMNS

    method: str
    io: str
    pair: PairRecord
    metric: str | None = None
    dice: float | None = None
    mtre: float | None = None
    negative_jacobian_percent: float | None = None
    initial_dice: float | None = None
    initial_mtre: float | None = None
    seconds: float | None = None

    def value(self, metric: str) -> float | None:
        """The score of ``metric`` (``dice``, ``landmarks`` or ``negative_jacobian_percent``)."""
        return getattr(self, METRIC_COLUMNS[metric])

    def initial(self, metric: str) -> float | None:
        """The unregistered score of ``metric`` (``dice`` or ``landmarks``)."""
        return getattr(self, f"initial_{METRIC_COLUMNS[metric]}")

    @classmethod
    def from_row(cls, row: Mapping[str, Any], where: str = "") -> EvalRecord:
        """Needs ``method``, ``io`` and the pair's columns; a score column that is missing reads as None."""
        _required(row, ("method", "io", *PairRecord.COLUMNS), where)
        pair = PairRecord(
            **{c: str(row[c]) for c in PairRecord.COLUMNS}, masked=parse_bool(row.get("masked"), "masked", where)
        )
        scores = {c: parse_float(row.get(c), c, where) for c in SCORE_COLUMNS}
        return cls(str(row["method"]), str(row["io"]), pair, row.get("metric") or None, **scores)

    def to_row(self) -> dict[str, str]:
        """The CSV fields, in :data:`~mgicon.vocabulary.EVAL_COLUMNS` order."""
        return {
            "method": self.method,
            "io": self.io,
            **{c: getattr(self.pair, c) for c in PairRecord.COLUMNS},
            "masked": format_bool(self.pair.masked),
            "metric": _text(self.metric),
            **{c: format_float(getattr(self, c)) for c in SCORE_COLUMNS},
            "seconds": "" if self.seconds is None else f"{self.seconds:.4f}",
        }


def parse_rows(rows: Iterable[Mapping[str, Any]], record: type[R], source: str | os.PathLike) -> list[R]:
    """The records of a CSV's rows (in file order, after the header: errors name ``source`` and the line)."""
    return [record.from_row(row, f"{source}:{line}") for line, row in enumerate(rows, start=2)]


def read_records(path: str | os.PathLike, record: type[R]) -> list[R]:
    """Every row of the CSV at ``path`` as a ``record`` (the file must have the record's ``COLUMNS``)."""
    return parse_rows(read_csv(path, record.COLUMNS), record, path)
