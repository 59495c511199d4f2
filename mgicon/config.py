"""The pipeline configuration: one schema, every default in it, every mistake caught before any job runs.

``config.schema.yaml`` (beside this module; ``workflow/schemas/config.schema.yaml`` links to it) is the single
source of every default (but the synthetic suite's own parameter table, :data:`mgicon.data.synthetic.DEFAULTS`,
that the ``synthetic`` key overrides).  :func:`resolve` turns a user's config into the complete one that every
job reads:

1. unknown keys are rejected at every level (an object of the schema that lists ``properties`` is closed unless
   it says ``additionalProperties``), with the closest known key as a hint;
2. every default is filled in, nested ones too (``training: {steps: {stage1: 5}}`` keeps ``stage2``'s default);
3. the result is validated against the schema (types, enums, bounds);
4. what a schema cannot say is cross-checked: the network's input shape against its preset, names that must
   exist (variants' datasets, ``finetune_from``, table column orders, ``learn2reg``'s Learn2Reg datasets and
   method), modality pairs against the dataset's modalities, the synthetic suite's settings, readable manifests
   (columns, ``split`` values, label maps on their image's grid) and released checkpoints (present, or
   downloadable) when they are needed.

A ``local`` dataset's ``source.root`` is checked by :func:`check_dataset_root` only where a plan needs the dataset
(the manifest rule's input function, while Snakemake builds the plan, before any job runs), so that a dataset no
target uses never blocks a plan.

Errors are :class:`ConfigError`: one line, ``FILE: key.path: problem``.  Library code never restates a default:
it reads the resolved config, or :func:`schema_default` where it has no config (the command line).
"""

from __future__ import annotations

import copy
import difflib
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlparse

import yaml

from mgicon.vocabulary import SPLITS

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class JobParams(dict):
    """A job's slice of the config.  Its ``repr``, which Snakemake compares to decide whether a job's params changed,
    does not depend on key order (reordering a YAML file reruns nothing); the mapping keeps the config's order."""

    def __repr__(self) -> str:
        return repr(_key_sorted(self))


def _key_sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _key_sorted(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [_key_sorted(v) for v in value]
    return value


class ConfigError(ValueError):
    """A config mistake; ``str()`` is one line naming the file(s) and the key path."""

    def __init__(self, key: str, problem: str, source: str | None = None):
        self.key, self.problem, self.source = key, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key or 'config'}: {problem}")


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def _node(dotted: str) -> dict:
    node = load_schema()
    for part in dotted.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"config schema has no key {dotted!r}")
    return node


def schema_default(dotted: str) -> Any:
    """The schema's default of ``dotted`` (e.g. ``"evaluation.io_lr"``); KeyError if it has none."""
    node = _node(dotted)
    if "default" not in node:
        raise KeyError(f"config schema key {dotted!r} has no default")
    return copy.deepcopy(node["default"])


def setting(config: Mapping[str, Any], dotted: str) -> Any:
    """``config``'s value at ``dotted`` (e.g. ``"evaluation.io_lr"``), or the schema's default where the config
    (a resolved one, or a job's slice of one) does not have it."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return schema_default(dotted)
        node = node[part]
    return node


def with_defaults(dotted: str, value: Mapping[str, Any] | None, label: str | None = None) -> dict[str, Any]:
    """A copy of one section of a config (``"evaluation"``, ``"datasets.*"`` for any dataset entry, …) with the
    schema's defaults filled in and unknown keys rejected, without the cross-checks of :func:`resolve`."""
    out = copy.deepcopy(dict(value or {}))
    _fill(_node(dotted), out, [label or dotted])
    return out


def _join(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


def _closed(node: Mapping[str, Any]) -> bool:
    return "properties" in node and node.get("additionalProperties", False) is False


def _fill(node: Mapping[str, Any], value: Any, path: list[str]) -> None:
    """Reject unknown keys and fill defaults in ``value`` (in place), recursively."""
    if not isinstance(value, dict):
        return
    props = node.get("properties", {})
    if _closed(node):
        for key in value:
            if key not in props:
                close = difflib.get_close_matches(str(key), list(props), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(props)}"
                raise ConfigError(_join([*path, key]), f"unknown key{hint}")
    for key, sub in props.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _fill(sub, value[key], [*path, key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in props:
                _fill(extra, value[key], [*path, key])


def _validate(config: Mapping[str, Any]) -> None:
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(load_schema())
    errors = sorted(validator_cls(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_join(error.absolute_path), error.message)


def resolve(
    config: Mapping[str, Any],
    source: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    check_files: bool = True,
    cross_check: bool = True,
) -> dict[str, Any]:
    """The complete, checked config: defaults filled in, unknown keys and cross-reference mistakes rejected.

    Args:
        config: the user's config (not modified).
        source: the file(s) it came from, named in errors.
        check_files: also check what the config names on disk (manifests, released checkpoints).
        cross_check: run the cross-checks at all (a job's slice of a resolved config, e.g. one variant without
            the one it is finetuned from, skips them: the plan checked the whole).

    Raises:
        ConfigError: one line naming ``source`` and the key path.
    """
    if source is not None and not isinstance(source, (str, os.PathLike)):
        source = ", ".join(str(s) for s in source) or None
    where = str(source) if source is not None else None
    out = copy.deepcopy(dict(config))
    try:
        _fill(load_schema(), out, [])
        _validate(out)
        if cross_check:
            _cross_check(out, check_files)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.problem, where) from None
    return out


def load(*paths: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read YAML config file(s) (later ones update earlier ones key by key, as Snakemake's ``--configfile``), then
    :func:`resolve` them."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("", f"cannot read ({exc.__class__.__name__}: {str(exc).splitlines()[0]})", str(path))
        if not isinstance(data, dict):
            raise ConfigError("", "not a mapping of config keys", str(path))
        merge(merged, data)
    if overrides:
        merge(merged, overrides)
    return resolve(merged, [str(p) for p in paths])


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Update ``base`` with ``update`` recursively (nested mappings merge; anything else replaces)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


# ------------------------------------------------------------------------------------------------ cross-checks


def _cross_check(config: dict[str, Any], check_files: bool) -> None:
    _check_network(config)
    datasets = config["datasets"]
    for name, spec in datasets.items():
        _check_dataset(name, spec, config, check_files)
    _check_synthetic(config)
    _check_variants(config, check_files)
    _check_evaluation(config, check_files)
    _check_learn2reg(config)


def _check_network(config: Mapping[str, Any]) -> None:
    from mgicon.network.presets import network_config

    try:
        network_config(config["network"])
    except ValueError as exc:  # a preset's own widths always match its levels: a width mistake is the config's
        key = "network.up_channels" if "channels" in str(exc) else "network.input_shape"
        raise ConfigError(key, str(exc)) from None


def _pair_modalities(text: str, key: str, modalities: Sequence[str]) -> None:
    parts = str(text).split("/")
    if len(parts) != 2:
        raise ConfigError(key, f"{text!r} is not MOVING/FIXED (e.g. t1w/t2w)")
    for m in parts:
        if m not in modalities:
            raise ConfigError(key, f"modality {m!r} is not one of the dataset's modalities {list(modalities)}")


def _check_dataset(name: str, spec: Mapping[str, Any], config: Mapping[str, Any], check_files: bool) -> None:
    key = f"datasets.{name}"
    modalities = spec["modalities"]
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"{key}.modalities", f"lists a modality twice: {modalities}")
    for i, pair in enumerate(spec.get("test_modality_pairs") or []):
        _pair_modalities("/".join(map(str, pair)), f"{key}.test_modality_pairs.{i}", modalities)
    for pair in (spec.get("evaluation") or {}).get("tables", {}) or {}:
        _pair_modalities(pair, f"{key}.evaluation.tables.{pair}", modalities)
    source = spec["source"]
    kind = source["kind"]
    needs = {"download": "url", "manifest": "path", "learn2reg": "path"}
    if kind in needs and not source.get(needs[kind]):
        raise ConfigError(f"{key}.source.{needs[kind]}", f"a {kind} source needs {needs[kind]}")
    if kind == "synthetic":
        from mgicon.data.synthetic import DATASETS

        generator = source.get("name", name)
        if generator not in DATASETS:
            raise ConfigError(
                f"{key}.source.name", f"no synthetic generator {generator!r}; known: {', '.join(DATASETS)}"
            )
    if kind == "manifest" and check_files:
        _check_manifest(name, spec, Path(str(source["path"])).expanduser())


def check_dataset_root(name: str, spec: Mapping[str, Any]) -> None:
    """A ``local`` dataset's ``source.root`` is set and names a folder (other source kinds read no root).

    Args:
        name: the dataset's name in ``datasets``.
        spec: its entry.

    Raises:
        ConfigError: naming ``datasets.NAME.source.root``.
    """
    source = spec.get("source") or {}
    if source.get("kind") != "local":
        return
    key, root = f"datasets.{name}.source.root", source.get("root")
    if not root:
        access = f" ({source['access']})" if source.get("access") else ""
        raise ConfigError(key, f"not set; a local dataset is read from your copy: set it to that folder{access}")
    path = Path(str(root)).expanduser()
    if not path.exists():
        raise ConfigError(key, f"{path} does not exist")
    if not path.is_dir():
        raise ConfigError(key, f"{path} is not a folder")


def _check_manifest(name: str, spec: Mapping[str, Any], path: Path) -> None:
    """A manifest readable at plan time: its columns, ``split`` values, modalities and label maps' grids."""
    from mgicon.data.manifest import ManifestError, check_files, read_manifest
    from mgicon.data.manifest import resolve as resolve_path

    key = f"datasets.{name}.source.path"
    if not path.is_file():
        raise ConfigError(key, f"manifest {path} not found")
    try:
        rows = read_manifest(path)
        check_files(rows, path)
    except ManifestError as exc:
        raise ConfigError(key, str(exc)) from None
    if not rows:
        raise ConfigError(key, f"{path}: lists no scans")
    for i, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS:
            raise ConfigError(key, f"{path}, line {i}: split {row['split']!r} is not {' or '.join(SPLITS)}")
        if row["modality"] not in spec["modalities"]:
            raise ConfigError(
                key, f"{path}, line {i}: modality {row['modality']!r} is not in datasets.{name}.modalities"
            )
    from mgicon.io import itk as itkio

    for i, row in enumerate(rows, start=2):
        image = resolve_path(path, row["image"])
        for column in ("label", "mask"):
            other = resolve_path(path, row.get(column, ""))
            if other is None:
                continue
            try:
                same = itkio.same_geometry(image, other)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ConfigError(key, f"{path}, line {i}: {exc}") from None
            if not same:
                raise ConfigError(key, f"{path}, line {i}: {column} {other} is not on the grid of its image {image}")


def _check_synthetic(config: Mapping[str, Any]) -> None:
    from mgicon.data import synthetic

    used = {
        spec["source"].get("name", name)
        for name, spec in config["datasets"].items()
        if spec["source"]["kind"] == "synthetic"
    }
    for generator in sorted(used):
        try:
            synthetic.dataset_config(generator, config.get("synthetic"))
        except ValueError as exc:
            raise ConfigError("synthetic", str(exc)) from None


def _check_variants(config: Mapping[str, Any], check_files: bool = True) -> None:
    variants = config["variants"]
    datasets = config["datasets"]
    io = config["evaluation"]["io"]
    for name, spec in variants.items():
        key = f"variants.{name}"
        for ds in spec.get("datasets") or []:
            if ds not in datasets:
                raise ConfigError(f"{key}.datasets", f"no dataset {ds!r} in datasets")
        base = spec.get("finetune_from")
        if base is not None:
            if base not in variants:  # a released model or a checkpoint path
                from mgicon.weights import RELEASE_URLS

                if base not in RELEASE_URLS and not Path(base).expanduser().is_file():
                    raise ConfigError(
                        f"{key}.finetune_from",
                        f"no variant {base!r} in variants, no released model of that name "
                        f"({', '.join(RELEASE_URLS)}) and no such checkpoint file",
                    )
                if check_files:
                    _check_released(f"{key}.finetune_from", base)
            elif variants[base].get("finetune_from"):
                raise ConfigError(
                    f"{key}.finetune_from", f"{base!r} is itself finetuned; finetune from a pretrained one"
                )
            if not any("finetune" in d["stages"] for d in datasets.values()):
                raise ConfigError(f"{key}.finetune_from", "no dataset has the finetune stage")
        for setting in spec.get("io") or []:
            if setting not in io:
                raise ConfigError(f"{key}.io", f"{setting!r} is not evaluated (evaluation.io: {io})")
    scratch = [n for n, v in variants.items() if not v.get("finetune_from")]
    if scratch and not any("pretrain" in d["stages"] for d in datasets.values()):
        raise ConfigError("variants", "variants are trained, but no dataset has the pretrain stage")


def _check_evaluation(config: Mapping[str, Any], check_files: bool) -> None:
    evaluation = config["evaluation"]
    datasets = config["datasets"]
    tests = [n for n, d in datasets.items() if "test" in d["stages"]]
    for table, names in evaluation["column_order"].items():
        for ds in names:
            if ds not in tests:
                raise ConfigError(f"evaluation.column_order.{table}", f"{ds!r} is not a test dataset")
    clash = set(evaluation["released"]) & (set(config["variants"]) | set(evaluation["baselines"]))
    if clash:
        raise ConfigError("evaluation.released", f"method name(s) {sorted(clash)} also name a variant or baseline")
    if not check_files:
        return
    for method, spec in evaluation["released"].items():
        _check_released(f"evaluation.released.{method}.model", str(spec["model"]))


def _check_released(key: str, model: str) -> None:
    """A released checkpoint by name must be cached or its download host reachable; a path must exist."""
    from mgicon import weights

    if model not in weights.RELEASE_URLS:
        if not Path(model).expanduser().is_file():
            raise ConfigError(
                key, f"no checkpoint {model} (and not a released model: {', '.join(weights.RELEASE_URLS)})"
            )
        return
    if weights.weights_available(model, checksum=False) is not None:  # size only: the job verifies the SHA-256
        return
    url = weights.release_url(model)
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            key,
            f"the released {model} weights are not in {weights.released_path(model)} and {parsed.hostname} cannot "
            f"be reached ({exc.__class__.__name__}); download {url} there where the internet is reachable",
        ) from None


def learn2reg_method(config: Mapping[str, Any]) -> str | None:
    """The network method whose fields the Learn2Reg submissions hold: ``learn2reg.method``, else the first variant,
    else the first released method (None: there is none)."""
    return config["learn2reg"]["method"] or next(iter([*config["variants"], *config["evaluation"]["released"]]), None)


def _check_learn2reg(config: Mapping[str, Any]) -> None:
    """Learn2Reg submissions of datasets of the config that are read from a Learn2Reg json, by a network method."""
    names = config["learn2reg"]["datasets"]
    if not names:
        return
    for i, name in enumerate(names):
        spec = config["datasets"].get(name)
        if spec is None:
            raise ConfigError(f"learn2reg.datasets.{i}", f"{name!r} is not a dataset of the config")
        from mgicon.data.adapters import is_learn2reg_source

        if not is_learn2reg_source(spec["source"]):
            raise ConfigError(
                f"learn2reg.datasets.{i}",
                f"{name!r} is not read from a Learn2Reg json (datasets.{name}.source: kind learn2reg, or a "
                "learn2reg layout)",
            )
    method = learn2reg_method(config)
    if method not in config["variants"] and method not in config["evaluation"]["released"]:
        raise ConfigError("learn2reg.method", f"{method!r} is not a variant or an evaluation.released method")


def syn_threads(deterministic: bool, threads: int | None, available: int | None = None) -> int | None:
    """The ITK threads of a SyN run (``evaluation.syn``): 1 when ``deterministic`` (ANTs' results depend on the
    thread count), else ``threads``, else ``available`` (a job's threads; None: ANTs' own default)."""
    return 1 if deterministic else (threads or available)
