"""Files shipped inside the package (package data): the event schemas, the default segment definitions
and the local broker's Maven pom. Found through importlib.resources, so an installed wheel works the
same as a source checkout (`schemas/` and `deploy/kafka/pom.xml` at the top of a checkout are links to
these files)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_file(*parts: str) -> Path:
    """The path of a file shipped in the package. Wheels install unzipped, so it is a real file."""
    path = Path(str(files("stream_app").joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(f"{'/'.join(parts)} is missing from the installed stream_app package ({path}); "
                                "reinstall it: pip install --force-reinstall stream-app")
    return path
