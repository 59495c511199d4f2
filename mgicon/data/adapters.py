"""Adapters: turn a raw distribution into manifest rows (see :mod:`mgicon.data.manifest`).

A registry entry's ``source`` says where its images come from (``kind``):

* ``synthetic`` — the embedded synthetic suite (:mod:`mgicon.data.synthetic`), generated offline (``name``: the
  generator, default the dataset's own name; ``seed_offset``: other subjects from the same generator);
* ``download`` — a public archive (``url``; ``sha256``/``size`` when published) downloaded into the resources
  folder, verified, extracted safely, then read by its ``layout`` (``learn2reg`` or ``template``);
* ``local`` — a controlled-access set read from the user's copy at ``root`` by its ``layout``;
* ``manifest`` — the user's own CSV manifest (``path``);
* ``learn2reg`` — the user's own Learn2Reg-style ``*_dataset.json`` (``path``).

Layouts:

* ``template`` — ``images: {modality: pattern}`` with ``{subject}`` and optionally ``{timepoint}`` fields, e.g.
  ``"{subject}/T1w/T1w_acpc_dc_restore_brain.nii.gz"``; optional ``label``, ``mask``, ``landmarks`` patterns (which
  may use ``{modality}``).  Scans are found through the first modality's pattern; every other file they need must
  exist, or the error lists what is missing.
* ``learn2reg`` — a Learn2Reg ``*_dataset.json``: ``training``/``validation``/``test`` lists of image (and label,
  mask, keypoints) paths named ``{task}_{case:04d}_{channel:04d}.nii.gz``; the channel is the scan's modality
  (``modality`` map) or, for tasks whose channels are timepoints of one modality, its timepoint.

Every adapter returns rows whose paths are absolute.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import ConfigError, check_dataset_root
from mgicon.data.archive import extract
from mgicon.data.manifest import (
    COLUMNS,
    FILE_COLUMNS,
    GROUND_TRUTH_COLUMNS,
    ManifestError,
    check_files,
    read_manifest,
    resolve,
)
from mgicon.download import download, sha256sum
from mgicon.fsutil import update_json
from mgicon.vocabulary import LEARN2REG_SPLITS

LOCK_NAME = "downloads.lock.json"


class DatasetSourceError(ValueError):
    """A dataset that cannot be read from where the config points; the message says what is missing."""


def _row(dataset: str, subject: str, timepoint: str, modality: str, image: Path, split: str, **files) -> dict:
    row = {c: "" for c in COLUMNS}
    row.update(dataset=dataset, subject=subject, timepoint=timepoint, modality=modality, image=str(image), split=split)
    for key, value in files.items():
        row[key] = str(value) if value else ""
    return row


def _split_of(subject: str, source: Mapping[str, Any]) -> str:
    test = set(map(str, source.get("test_subjects", [])))
    return "test" if subject in test else source.get("split") or "train"


# ------------------------------------------------------------------------------------------ template layout


def _pattern_regex(pattern: str) -> re.Pattern:
    """A layout pattern as a regex; a field named again (``{subject}/{subject}_…``) must repeat its first match."""
    parts = re.split(r"(\{subject\}|\{timepoint\})", pattern)
    seen: set[str] = set()
    pieces = []
    for p in parts:
        if p in ("{subject}", "{timepoint}"):
            field = p[1:-1]
            pieces.append(f"(?P={field})" if field in seen else f"(?P<{field}>[^/]+?)")
            seen.add(field)
        else:
            pieces.append(re.escape(p))
    return re.compile("".join(pieces) + r"\Z")


def read_template(name: str, root: Path, layout: Mapping[str, Any], source: Mapping[str, Any]) -> list[dict]:
    """Rows of a dataset stored as files following name patterns under ``root``."""
    images: Mapping[str, str] = layout["images"]
    first_modality, first_pattern = next(iter(images.items()))
    regex = _pattern_regex(first_pattern)
    found = []
    for path in sorted(root.rglob("*")):
        m = regex.match(path.relative_to(root).as_posix())
        if m:
            found.append((m.group("subject"), m.groupdict().get("timepoint") or "0"))
    if not found:
        raise DatasetSourceError(f"dataset {name}: no file under {root} matches {first_pattern!r}")
    rows, missing = [], []
    for subject, timepoint in found:
        fields = {"subject": subject, "timepoint": timepoint}
        for modality, pattern in images.items():
            image = root / pattern.format(**fields)
            extra = {}
            for key in ("label", "mask", "landmarks"):
                if layout.get(key):
                    extra[key] = root / layout[key].format(modality=modality, **fields)
            for path in [image, *extra.values()]:
                if not path.exists():
                    missing.append(str(path))
            rows.append(_row(name, subject, timepoint, modality, image, _split_of(subject, source), **extra))
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetSourceError(f"dataset {name}: {len(missing)} expected file(s) missing under {root}: {shown}")
    return rows


# ----------------------------------------------------------------------------------------- Learn2Reg layout

_L2R_NAME = re.compile(r"(?P<task>.+)_(?P<case>\d{4})_(?P<channel>\d{4})\.nii(\.gz)?\Z")


def _entries(value) -> list:
    """A dataset.json image list; AbdomenMRCT keys its ``training`` list by modality channel."""
    if isinstance(value, Mapping):
        return [e for v in value.values() for e in (v or [])]
    return list(value or [])


def read_learn2reg(name: str, dataset_json: Path, layout: Mapping[str, Any], source: Mapping[str, Any]) -> list[dict]:
    """Rows of a Learn2Reg-style dataset from its ``*_dataset.json``.

    ``layout`` options: ``channel_is`` (``modality``, default, or ``timepoint``), ``modality_names`` (map from the
    json's modality names, lower-cased, to ours, e.g. ``{fbct: ct, mr: t1w}``), ``keypoints_key`` (the entry key of
    the keypoint file, default ``keypoints``).  Keypoint CSVs are Learn2Reg's: voxel indices, no header.
    """
    if not dataset_json.is_file():
        raise DatasetSourceError(f"dataset {name}: {dataset_json} not found")
    try:
        meta = json.loads(dataset_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetSourceError(f"{dataset_json}: not valid JSON ({exc})") from None
    root = dataset_json.parent
    rename = {str(k).lower(): str(v) for k, v in (layout.get("modality_names") or {}).items()}
    channels = {str(k): rename.get(str(v).lower(), str(v).lower()) for k, v in (meta.get("modality") or {}).items()}
    by_timepoint = layout.get("channel_is", "modality") == "timepoint"
    keypoints_key = layout.get("keypoints_key", "keypoints")
    rows, missing = [], []
    for key, listed_split in (("training", "train"), ("validation", "test"), ("test", "test")):
        for entry in _entries(meta.get(key)):
            entry = {"image": entry} if isinstance(entry, str) else entry
            image = (root / entry["image"]).resolve()
            m = _L2R_NAME.match(image.name)
            if not m:
                raise DatasetSourceError(f"{dataset_json}: image name {image.name!r} is not TASK_CASE_CHANNEL.nii.gz")
            subject, channel = m.group("case"), str(int(m.group("channel")))
            modality = channels.get(channel, f"channel{channel}")
            timepoint = channel if by_timepoint else "0"
            extra = {
                k: (root / entry[v]).resolve()
                for k, v in (("label", "label"), ("mask", "mask"), ("landmarks", keypoints_key))
                if entry.get(v)
            }
            for path in [image, *extra.values()]:
                if not path.exists():
                    missing.append(str(path))
            split = _split_of(subject, source) if source.get("test_subjects") else listed_split
            rows.append(_row(name, subject, timepoint, modality, image, split, **extra))
    if not rows:
        raise DatasetSourceError(f"{dataset_json}: lists no images under training, validation or test")
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetSourceError(f"dataset {name}: {len(missing)} file(s) named in {dataset_json} are missing: {shown}")
    return rows


#: the dataset.json key listing each split's registration pairs
LEARN2REG_PAIR_KEYS = {split: f"registration_{split}" for split in LEARN2REG_SPLITS}


@dataclass(frozen=True)
class Learn2RegPair:
    """One pair of a Learn2Reg split: absolute image paths, their case and channel ids, the label maps and masks the
    json lists for the two images (None: none listed), and the field's file name."""

    fixed: Path
    moving: Path
    fixed_case: str
    fixed_channel: str
    moving_case: str
    moving_channel: str
    fixed_label: Path | None = None
    moving_label: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None

    @property
    def displacement_name(self) -> str:
        """The file name of the pair's field where the official evaluation finds it.

        The evaluation (MDL-UzL/L2R ``evaluation/evaluation.py`` since its Feb 2025 "fixed naming issue") always
        accepts ``disp_{fix}_{fixch}_{mov}_{movch}.nii.gz``, and the short ``disp_{fix}_{mov}.nii.gz`` only for a
        fixed channel ``0000`` and a moving ``0001``.  The short name is kept there because its earlier version
        looked for that name too, so such submissions score under both; every other pair gets the long name.
        """
        if (self.fixed_channel, self.moving_channel) == ("0000", "0001"):
            return f"disp_{self.fixed_case}_{self.moving_case}.nii.gz"
        return f"disp_{self.fixed_case}_{self.fixed_channel}_{self.moving_case}_{self.moving_channel}.nii.gz"


def learn2reg_modalities(dataset_json: Path) -> dict[str, str]:
    """The json's ``modality`` names by 4-digit channel id (``{"0000": "CT"}``)."""
    meta = _read_json(dataset_json)
    return {f"{int(k):04d}": str(v) for k, v in (meta.get("modality") or {}).items()}


def _read_json(dataset_json: Path) -> dict:
    if not dataset_json.is_file():
        raise DatasetSourceError(f"{dataset_json}: no such dataset json")
    try:
        return json.loads(dataset_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetSourceError(f"{dataset_json}: not valid JSON ({exc})") from None


def learn2reg_pairs(dataset_json: Path, split: str) -> list[Learn2RegPair]:
    """The registration pairs of ``split`` (``val``: ``registration_val``, ``test``: ``registration_test``) of a
    Learn2Reg ``*_dataset.json``: entries ``{"fixed": "./imagesTr/TASK_CASE_CHANNEL.nii.gz", "moving": ...}``,
    relative to the json's folder; each image's ``label`` and ``mask`` from its entry in the json's ``training``,
    ``validation`` or ``test`` list, where it has one."""
    if split not in LEARN2REG_PAIR_KEYS:
        raise DatasetSourceError(f"split {split!r}: choose from {list(LEARN2REG_PAIR_KEYS)}")
    meta, key = _read_json(dataset_json), LEARN2REG_PAIR_KEYS[split]
    entries = meta.get(key)
    if not entries:
        raise DatasetSourceError(f"{dataset_json}: lists no pairs under {key!r}")
    listed = _listed_files(dataset_json, meta)
    pairs, missing = [], []
    for entry in entries:
        if not isinstance(entry, Mapping) or "fixed" not in entry or "moving" not in entry:
            raise DatasetSourceError(f"{dataset_json}: {key} entry {entry!r} lacks 'fixed' or 'moving'")
        paths, ids = [], []
        for role in ("fixed", "moving"):
            path = (dataset_json.parent / entry[role]).resolve()
            m = _L2R_NAME.match(path.name)
            if not m:
                raise DatasetSourceError(f"{dataset_json}: image name {path.name!r} is not TASK_CASE_CHANNEL.nii.gz")
            if not path.is_file():
                missing.append(str(path))
            paths.append(path)
            ids += [m.group("case"), m.group("channel")]
        files = [listed.get(path, {}) for path in paths]
        labels = [f.get("label") for f in files]
        masks = [f.get("mask") for f in files]
        pairs.append(Learn2RegPair(paths[0], paths[1], *ids, *labels, *masks))
    if missing:
        raise DatasetSourceError(f"{dataset_json}: {len(missing)} image(s) of {key} are missing: {missing[0]}")
    return pairs


def _listed_files(dataset_json: Path, meta: Mapping[str, Any]) -> dict[Path, dict[str, Path]]:
    """The ``label`` and ``mask`` of every image entry of the json's image lists, by absolute image path."""
    listed: dict[Path, dict[str, Path]] = {}
    for key in ("training", "validation", "test"):
        for entry in _entries(meta.get(key)):
            if isinstance(entry, Mapping) and entry.get("image"):
                files = {k: (dataset_json.parent / entry[k]).resolve() for k in ("label", "mask") if entry.get(k)}
                listed[(dataset_json.parent / entry["image"]).resolve()] = files
    return listed


def is_learn2reg_source(source: Mapping[str, Any]) -> bool:
    """Whether a dataset's ``source`` is read from a Learn2Reg json: ``kind: learn2reg``, or a download or local copy
    with ``layout.kind: learn2reg``."""
    kind = source.get("kind")
    return kind == "learn2reg" or (
        kind in ("download", "local") and (source.get("layout") or {}).get("kind") == "learn2reg"
    )


def learn2reg_json(name: str, source: Mapping[str, Any], resources: Path) -> Path:
    """The ``*_dataset.json`` of a Learn2Reg dataset of the config (:func:`is_learn2reg_source`; downloads must have
    been fetched, e.g. by the dataset's manifest job)."""
    if not is_learn2reg_source(source):
        raise DatasetSourceError(
            f"dataset {name}: not a Learn2Reg dataset (source kind learn2reg, or a learn2reg layout)"
        )
    if source["kind"] == "learn2reg":
        return Path(source["path"]).expanduser()
    layout = source.get("layout") or {}
    root = (
        resources / name / "extracted" if source["kind"] == "download" else Path(source.get("root") or "").expanduser()
    )
    found = sorted(root.rglob(layout.get("json", "*_dataset.json")))
    if not found:
        raise DatasetSourceError(f"dataset {name}: no *_dataset.json under {root}")
    return found[0]


# ---------------------------------------------------------------------------------------------- downloads


def record_download(lock_path: str | os.PathLike, url: str, sha256: str, size: int) -> dict:
    """Record ``url``'s SHA-256 and size in the lock file unless one is recorded already (the first download's
    record stands); return the recorded entry.  Safe for parallel jobs: the read-modify-write is serialised by a
    file lock and written through a unique temporary file (:func:`mgicon.fsutil.update_json`)."""

    def add(lock: dict) -> None:
        lock.setdefault(url, {"sha256": sha256, "size": int(size)})

    return update_json(lock_path, add)[url]


def fetch_archive(name: str, source: Mapping[str, Any], resources: Path) -> Path:
    """Download (resumably) and extract a public archive once; the first download's SHA-256 is recorded in
    ``resources/downloads.lock.json`` and every later download must match it (or the published ``sha256``)."""
    url = source["url"]
    folder = resources / name
    extracted = folder / "extracted"
    if extracted.is_dir():
        return extracted
    lock_path = resources / LOCK_NAME
    lock = json.loads(lock_path.read_text(encoding="utf-8")) if lock_path.is_file() else {}
    recorded = lock.get(url, {})
    archive = folder / Path(url.split("?")[0]).name
    download(
        url,
        archive,
        sha256=source.get("sha256") or recorded.get("sha256"),
        size=source.get("size") or recorded.get("size"),
    )
    if url not in lock:
        record_download(lock_path, url, sha256sum(archive), archive.stat().st_size)
    extract(archive, extracted)
    return extracted


def _read_layout(name: str, root: Path, source: Mapping[str, Any]) -> list[dict]:
    layout = source.get("layout") or {}
    kind = layout.get("kind", "template")
    if kind == "learn2reg":
        found = sorted(root.rglob(layout.get("json", "*_dataset.json")))
        if not found:
            raise DatasetSourceError(f"dataset {name}: no *_dataset.json under {root}")
        return read_learn2reg(name, found[0], layout, source)
    if kind == "template":
        return read_template(name, root, layout, source)
    raise DatasetSourceError(f"dataset {name}: unknown layout kind {kind!r}")


def dataset_rows(
    name: str,
    source: Mapping[str, Any],
    resources: Path,
    work: Path,
    seed: int = 0,
    synthetic: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Manifest rows of one dataset from its registry ``source`` (see the module docstring)."""
    kind = source.get("kind")
    if kind == "synthetic":
        from mgicon.data import synthetic as syn

        generator = source.get("name", name)
        if generator != name:  # another dataset drawn from the same generator: own folder, own subjects
            work = work / name
        rows = syn.generate_dataset(generator, work, synthetic or {}, seed + int(source.get("seed_offset") or 0))
        files = (*FILE_COLUMNS, *GROUND_TRUTH_COLUMNS)
        return [{**r, **{k: str(work / r[k]) if r[k] else "" for k in files if k in r}, "dataset": name} for r in rows]
    if kind == "download":
        return _read_layout(name, fetch_archive(name, source, resources), source)
    if kind == "local":
        try:
            check_dataset_root(name, {"source": source})
        except ConfigError as exc:
            raise DatasetSourceError(str(exc)) from None
        return _read_layout(name, Path(source["root"]).expanduser(), source)
    if kind == "manifest":
        path = Path(source["path"]).expanduser()
        try:
            rows = read_manifest(path)
            check_files(rows, path)
        except ManifestError as exc:
            raise DatasetSourceError(str(exc)) from None
        return [
            {**r, "dataset": name, **{c: str(resolve(path, r[c])) if r[c] else "" for c in FILE_COLUMNS}} for r in rows
        ]
    if kind == "learn2reg":
        return read_learn2reg(name, Path(source["path"]).expanduser(), source.get("layout") or {}, source)
    raise DatasetSourceError(f"dataset {name}: unknown source kind {kind!r}")
