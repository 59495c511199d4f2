"""Experiment tracking: the only module that imports MLflow.

One MLflow run per training or evaluation job.  The store is a local SQLite file by default
(``sqlite:///results/mlflow.db``, artifacts beside it in ``results/mlartifacts``) and a tracking server when the
config gives an ``http(s)://`` URI; an unreachable server is an error before any work starts, never lost work.
Metrics are buffered and written in batches (one ``log_batch`` per flush), which is ~20× cheaper than one call per
value on SQLite.  Processes other than rank 0 get a :class:`NullTracker`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from mgicon.config import schema_default, setting
from mgicon.fsutil import atomic_write_text

DEFAULT_EXPERIMENT = schema_default("tracking.experiment")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


def default_uri(results: str | os.PathLike = "results") -> str:
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail early and clearly when a tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server {uri}: health check answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)})") from None


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            out[name] = text[:6000]
    return out


def _experiment_id(client: Any, name: str, artifact_root: str | os.PathLike | None) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root``) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


class Tracker:
    """An MLflow run: ``params`` once, metrics buffered by step, artifacts, and a final status."""

    def __init__(
        self,
        uri: str,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        artifact_root: str | os.PathLike | None = None,
        run_id: str | None = None,
    ):
        check_reachable(uri)
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        experiment_id = _experiment_id(self.client, experiment, artifact_root)
        if run_id is not None and not self._has_run(run_id):
            run_id = None  # a resumed job whose run this store lacks (a new or another store): a new run
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
            self.run_id = run.info.run_id
            if params:
                flat = _flatten(params)
                items = [self._Param(k, v) for k, v in flat.items()]
                for i in range(0, len(items), 100):
                    self.client.log_batch(self.run_id, params=items[i : i + 100])
        else:  # resuming a run: same id, keep logging
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        self._buffer: list = []

    def _has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        self._buffer += [self._Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if len(self._buffer) >= 500:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer = []

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[self._RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    def write_run_file(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write ``{"run_id": ..., "tracking_uri": ...}`` atomically (e.g. ``mlflow_run.json``)."""
        record = {"run_id": self.run_id, "tracking_uri": self.uri, **extra}
        atomic_write_text(path, json.dumps(record, indent=2))


def config_tracker(
    config: Mapping[str, Any],
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Tracker:
    """A :class:`Tracker` on the store and experiment a pipeline config names (``tracking.uri``, default
    ``sqlite:///<results>/mlflow.db``; artifacts in ``<results>/mlartifacts``)."""
    results = Path(setting(config, "results"))
    tracking = config.get("tracking") or {}
    return Tracker(
        tracking.get("uri") or default_uri(results),
        run_name,
        params=params,
        tags=tags,
        experiment=setting(config, "tracking.experiment"),
        artifact_root=results / "mlartifacts",
        run_id=run_id,
    )


def ensure_experiment(config: Mapping[str, Any]) -> dict[str, str]:
    """Create the config's MLflow experiment if it is missing (once, before any job logs to it, so parallel jobs
    never race to create it); returns ``{"experiment_id", "name", "tracking_uri"}``."""
    results = Path(setting(config, "results"))
    tracking = config.get("tracking") or {}
    uri = tracking.get("uri") or default_uri(results)
    name = setting(config, "tracking.experiment")
    check_reachable(uri)
    from mlflow.tracking import MlflowClient

    experiment_id = _experiment_id(MlflowClient(tracking_uri=uri), name, results / "mlartifacts")
    return {"experiment_id": str(experiment_id), "name": name, "tracking_uri": uri}


def metric_history(uri: str, run_id: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """Every logged value of each of ``keys`` in the run: ``{key: [(step, value), ...]}`` by step (keys the run
    never logged are left out)."""
    check_reachable(uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = {}
    for key in keys:
        values = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if values:
            out[key] = values
    return out


class NullTracker:
    """Stands in for :class:`Tracker` where nothing is logged (ranks other than 0, tests)."""

    run_id = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def flush(self) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(self, path, artifact_path=None) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...

    def write_run_file(self, path, **extra) -> None: ...
