"""Prints what the operator image installs before the project itself, one requirement a line.

That is pyproject.toml's ``[project] dependencies`` followed by its ``[build-system] requires``
(the project is installed with ``--no-build-isolation``, so its build backend must be in the
image's environment). operator/Dockerfile installs this list in a layer of its own, so a source
change does not reinstall it; scripts/build-images.sh downloads wheels for the same list.

Usage: python operator/image_requirements.py [PATH/TO/pyproject.toml]

Standard library only: it runs on the bare base image, before anything is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: tomli, or the copy pip vendors (python:3.10 images have pip)
    try:
        import tomli as tomllib
    except ImportError:
        from pip._vendor import tomli as tomllib


def image_requirements(pyproject: dict) -> list[str]:
    """The project's dependencies, then its build requirements (duplicates dropped, order kept)."""
    try:
        dependencies = pyproject["project"]["dependencies"]
        build = pyproject["build-system"]["requires"]
    except KeyError as missing:
        raise SystemExit(f"pyproject.toml has no {missing}: the image needs [project] dependencies "
                         "and [build-system] requires") from None
    return list(dict.fromkeys(dependencies + build))


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    with path.open("rb") as f:
        print("\n".join(image_requirements(tomllib.load(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
