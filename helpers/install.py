"""The installation check: ``python -m helpers`` prints an OK/FAIL line per requirement."""

from __future__ import annotations

import importlib.metadata as metadata
import platform

from packaging.requirements import Requirement
from packaging.version import Version

PROJECT = "course-helpers"
MIN_PYTHON = "3.10"


def _requirement_lines(project: str) -> list[tuple[bool, str, str]]:
    fix = "run `pip install -e .` in the course folder (or `make install`)"
    try:
        required = [Requirement(r) for r in metadata.requires(project) or []]
    except metadata.PackageNotFoundError:
        return [(False, f"{project} is not installed", fix)]
    lines = []
    for req in required:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (course tooling), not needed to run the notebooks
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            lines.append((False, f"{req.name}: missing (needs {req.specifier})", fix))
            continue
        ok = req.specifier.contains(have, prereleases=True)
        lines.append(
            (ok, f"{req.name} {have} (needs {req.specifier})", f"upgrade: pip install -U '{req}'")
        )
    return lines


def check_install(project: str = PROJECT) -> bool:
    """Print an OK/FAIL line for Python, each runtime requirement and the accelerator.

    The requirements are read from the installed project's metadata (pyproject.toml), so this
    check and the package never disagree. Returns True when nothing failed.
    """
    from .device import available, describe_device

    python = platform.python_version()
    lines = [
        (
            Version(python) >= Version(MIN_PYTHON),
            f"Python {python} (needs >= {MIN_PYTHON})",
            f"install Python {MIN_PYTHON} or newer",
        )
    ]
    lines += _requirement_lines(project)
    for ok, text, todo in lines:
        print(f"{'OK  ' if ok else 'FAIL'} {text}" + ("" if ok else f"  ->  {todo}"))
    accelerator = [kind for kind in ("cuda", "mps") if available(kind)]
    if accelerator:
        print(f"OK   accelerator: {describe_device(accelerator[0])}")
    else:
        print(
            "NOTE no GPU found: everything runs on the CPU (slower, but every notebook works). "
            "On Colab, choose Runtime > Change runtime type > GPU."
        )
    return all(ok for ok, _, _ in lines)
