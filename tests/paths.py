"""Where the tests find the workflow and its configs (the Snakemake workflow catalog's layout)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILES = REPO / "workflow" / "profiles"
CONFIGS = REPO / "config"  # the demo (config.yaml) and the studies (paper.yaml, released.yaml)
TEST_CONFIGS = REPO / ".test" / "config"  # the micro configs the workflow tests run
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as Snakemake reads it (before mgicon.config fills the defaults)."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
