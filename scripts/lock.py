"""Print constraints.txt: the exact version of every package tunewise (with all its extras) needs, as installed in
the active environment, which should be one where `bash scripts/test.sh` just passed. Run through scripts/lock.sh.

torch, and the packages only torch needs (its CUDA wheels, triton), are left out on purpose: scripts/install.sh
chooses the torch build per machine, and a CUDA machine must not be forced onto the CPU pin."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> list[Requirement]:
    """tunewise's own requirements and those of every extra, read from the checkout's pyproject.toml (not from an
    installed copy, which may be older)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"]) + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    return [Requirement(line) for line in lines]


def closure() -> dict[str, str]:
    """{distribution name: version} of everything tunewise's requirements reach in this environment, torch and its
    own tree excluded."""
    pins: dict[str, str] = {}
    todo = [(r.name, set(r.extras)) for r in project_requirements()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonical(name), frozenset(extras))
        if key in seen or canonical(name) == "torch":
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed here: run `bash scripts/install.sh test` first")
        pins[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in environments):
                continue
            todo.append((req.name, set(req.extras)))
    return pins


def main() -> None:
    pins = closure()
    python = ".".join(map(str, sys.version_info[:2]))
    print("# The versions the test suite passed with (Python %s). Regenerate: bash scripts/lock.sh" % python)
    print("# scripts/install.sh installs through this file (pip -c); torch is chosen per machine, not pinned here.")
    for name in sorted(pins, key=canonical):
        print(f"{canonical(name)}=={pins[name]}")


if __name__ == "__main__":
    main()
