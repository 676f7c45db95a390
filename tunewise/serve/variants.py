"""The models a server answers with: a base and any number of adapters on one loaded copy of it, or full models.

Adapters trained on the same base share one ``PeftModel`` (``load_adapter`` per run; ``set_adapter`` picks one per
request, ``disable_adapter`` serves the base), so serving base + N tuned variants costs one base in memory plus N
small adapters. A variant's ``lock`` guards the model object it shares: one generation at a time per object.

Safe by default, per run: a run whose config says ``trust_remote_code: true`` gets its own copy of the base, loaded
with remote code; runs that don't say so share a base loaded without it (one run can't switch it on for others).
Adapters load from ``adapter_model.safetensors`` only; a pickled ``adapter_model.bin`` is refused unless the user
opts in (``allow_pickle``, ``tunewise serve --allow-pickle``): unpickling runs code from the file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

log = logging.getLogger(__name__)


@dataclass
class Variant:
    name: str
    model: Any
    tokenizer: Any
    source: str
    adapter: str | None = None  # PEFT adapter to activate; None on a PeftModel means the base (adapters disabled)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def context_length(self) -> int:
        n = getattr(self.model.config, "max_position_embeddings", None)
        limit = getattr(self.tokenizer, "model_max_length", None)
        candidates = [x for x in (n, limit) if isinstance(x, int) and 0 < x < 10**8]
        return min(candidates) if candidates else 2048

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        """Hold the lock and yield the model with this variant's adapter switched on (or all adapters off)."""
        with self.lock:
            if not hasattr(self.model, "peft_config"):
                yield self.model
            elif self.adapter is None:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(self.adapter)
                yield self.model


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    taken.add(candidate)
    return candidate


class PickleRefused(ValueError):
    """An adapter folder has only a pickle checkpoint and the user did not opt in to loading it."""


def check_adapter_files(model_dir: Path, *, allow_pickle: bool = False) -> None:
    """Refuse an adapter folder whose weights are a pickle (``adapter_model.bin``) only, unless ``allow_pickle``."""
    if (model_dir / "adapter_model.safetensors").is_file():
        return
    pickled = [name for name in ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
               if (model_dir / name).is_file()]
    if pickled and not allow_pickle:
        raise PickleRefused(
            f"{model_dir / pickled[0]} is a pickle file and {model_dir} has no adapter_model.safetensors: tunewise loads "
            "safetensors only, because unpickling can run code from the file. Convert it to safetensors, or pass "
            "--allow-pickle (allow_pickle=True) if you trust where it came from")
    if not pickled:
        raise FileNotFoundError(f"{model_dir} has no adapter_model.safetensors; train the run again or point at the "
                                "folder that holds the adapter")


def load_variants(
    targets: Sequence[str | Path], *, include_base: bool = True, device: str = "cpu", dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> dict[str, Variant]:
    """Load every target (run directory or model folder) as a variant; adapters on one base share it.

    With ``include_base`` each distinct base of an adapter run is served too, as ``base`` (``base-2``, ... when
    runs have different bases, or a base is loaded twice: with and without ``trust_remote_code``, module docstring).
    ``allow_pickle``: load adapters saved as pickles (``adapter_model.bin``) too.
    """
    from peft import PeftModel

    from tunewise.export.common import load_exported
    from tunewise.lm.loading import base_key, classify, load_adapter_base, load_tokenizer, resolve_model

    if not targets:
        raise ValueError("give at least one run directory or model folder to serve")
    taken: set[str] = {"ab"}
    variants: dict[str, Variant] = {}
    # adapters share a base only with runs that load it the same way (tunewise/lm/loading.py: base_key): the same
    # quantization (a QLoRA adapter is served on its 4-bit base, as trained) and trust_remote_code (one run can't turn
    # it on for another)
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for target in targets:
        source = classify(target)
        if source.kind == "name":
            raise FileNotFoundError(f"{target} is neither a run directory (config.yaml) nor a model folder "
                                    "(config.json); pass RUN or a folder such as RUN/export/merged")
        trc = source.trust_remote_code
        if not source.is_adapter:
            name = _unique(source.name, taken)
            variants[name] = Variant(name, load_exported(source.path, device=device, trust_remote_code=trc, dtype=dtype),
                                     load_tokenizer(source.path, trust_remote_code=trc), source.path)
        else:
            check_adapter_files(Path(source.path), allow_pickle=allow_pickle)
            groups.setdefault(base_key(source), []).append(source)
    for sources in groups.values():
        first = sources[0]
        trc = first.trust_remote_code
        model: Any = load_adapter_base(first, dtype=dtype, device=device, trust_remote_code=trc).eval()
        lock = threading.Lock()
        if include_base:
            name = _unique("base", taken)
            variants[name] = Variant(name, model, load_tokenizer(str(first.base), trust_remote_code=trc),
                                     resolve_model(str(first.base)), lock=lock)
        for source in sources:
            name = _unique(source.name, taken)
            if not isinstance(model, PeftModel):
                model = PeftModel.from_pretrained(model, source.path, adapter_name=name).eval()
            else:
                model.load_adapter(source.path, adapter_name=name)
            variants[name] = Variant(name, model, load_tokenizer(source.path, trust_remote_code=trc),
                                     source.path, adapter=name, lock=lock)
        for v in variants.values():  # the base variant was created before the PeftModel wrapped its model
            if v.lock is lock:
                v.model = model
    log.info("serving %s", ", ".join(f"{n} ({v.source})" for n, v in variants.items()))
    return variants
