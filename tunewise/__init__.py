"""tunewise: fine-tune language models the way best practice says it should be done."""

from tunewise.version import __version__

import warnings as _warnings

# peft 0.21 reads model.is_gradient_checkpointing in every PeftModel it builds; transformers 5.24 renamed it
# (is_activation_checkpointing) and warns each time: nothing a tunewise user can act on
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

# The Python API (tunewise/api.py), one function per command; imported on first use so `import tunewise` stays light
_API = ("run", "prepare", "train", "evaluate", "compare", "export", "load", "LoadedModel")
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 module attribute
    if name in ("train", "evaluate", "export"):  # packages that are also the API's functions (tunewise/api.py)
        import importlib

        return importlib.import_module(f"tunewise.{name}")
    if name in _API:
        from tunewise import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunewise' has no attribute {name!r}")
