"""Where the benchmarks' real data comes from: `--data-dir`, else ../shared/data beside the
checkout, else (with FINETUNE_ALLOW_HUB=true and network) the GLUE sets from the Hugging Face
Hub, written once as the same CSV files. Anything else stops with a message saying what to do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.core.settings import data_home, get_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
GLUE_SPLITS = {"cola": ("train", "validation"), "sst2": ("train", "validation")}


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"folder with cola/ and sst2/ CSV files (default: {SHARED_DATA} when it exists)",
    )


def data_set(data_dir: Path | None, name: str) -> Path:
    """The folder holding `name`'s train.csv and validation.csv (columns sentence,label)."""
    if data_dir is not None:
        folder = data_dir / name
        if not (folder / "train.csv").is_file():
            raise SystemExit(f"--data-dir {data_dir}: no {name}/train.csv there")
        return folder
    if (SHARED_DATA / name / "train.csv").is_file():
        return SHARED_DATA / name
    if get_settings().allow_hub and name in GLUE_SPLITS:
        return download_glue(name)
    raise SystemExit(
        f"no data for {name}: pass --data-dir (a folder with {name}/train.csv and "
        f"{name}/validation.csv, columns sentence,label), put the shared data at {SHARED_DATA}, "
        "or set FINETUNE_ALLOW_HUB=true to download GLUE from the Hugging Face Hub"
    )


def download_glue(name: str) -> Path:
    """GLUE's `name` from the Hub, as CSV files in the per-user data folder (once)."""
    from datasets import load_dataset

    folder = data_home() / "bench-data" / name
    for split in GLUE_SPLITS[name]:
        target = folder / f"{split}.csv"
        if target.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        rows = load_dataset("nyu-mll/glue", name, split=split)
        rows.select_columns(["sentence", "label"]).to_csv(str(target), index=False)
    return folder


def first_rows(source: Path, rows: int, target: Path) -> Path:
    """The first `rows` rows of a sentence,label CSV file, written to `target`."""
    import csv

    with source.open() as handle:
        kept = list(csv.DictReader(handle))[:rows]
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sentence", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    return target
