"""``tunewise.train``, ``tunewise.evaluate`` and ``tunewise.export`` are packages *and* functions of the Python API
(tunewise/api.py): Python binds ``tunewise.train`` to the package once any of its modules is imported, so a plain
function of that name would be replaced. Calling the package calls the API function; it is looked up by name when
called, so importing a stage does not import the API (and through it every other stage)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("tunewise.api")  # the facade above every stage: resolved at call time
        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def callable_package(name: str) -> None:
    """Make the package ``name`` callable as the API function of the same name."""
    sys.modules[name].__class__ = _CallablePackage
