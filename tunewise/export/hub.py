"""``tunewise export RUN --to-dir DIR`` and ``--push-to-hub REPO``: one shareable layout, on disk or on the hub.

The layout (the same bytes either way; the push uploads the folder :func:`share_layout` writes):

    README.md  adapter_config.json + adapter_model.safetensors (or config.json + model*.safetensors)
    tokenizer.json  tokenizer_config.json  chat_template.jinja  tunewise_base.json (adapters)
    comparison.json                       the base-vs-tuned table the card quotes (when the run was compared)
    <export>/                             every finished export of the run: merged/, int8/, gguf-q8_0/ ... with its card

The shared copy names no path of this machine: adapter_config.json points at the hub id of the base where one is
known (else the base's name as the run gave it, e.g. ``tiny``: the card says where it came from and its hash), and
tunewise_base.json keeps the base's name, hub id and weights hash but not its local folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunewise.config import Config
from tunewise.model_card import (BASE_FILE, CARD_FILE, base_reference, fill_model_folder, folder_kind,
                                         model_card)
from tunewise.rundir import RunDir, atomic_dir, atomic_write_json, atomic_write_text

_SKIP = {CARD_FILE, "training_args.bin"}  # rewritten below / a pickle the Trainer leaves, never shared


def _copy_folder(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in _SKIP and not path.name.startswith("."):
            shutil.copy2(path, target / path.name)


def _complete_exports(run: RunDir) -> list[Path]:
    from tunewise.export.common import export_problem, export_root

    root = export_root(run)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder.name.startswith("gguf-") and any(folder.glob("*.gguf"))) or export_problem(folder) is None:
            found.append(folder)
    return found


def share_layout(config: Config, run_dir: str | Path, target: Path, *, where: str = "PATH_OR_REPO") -> list[str]:
    """Write the shareable layout of a trained run into ``target`` (an empty folder). Returns the files, relative."""
    run = RunDir.of(run_dir)
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    _copy_folder(model_dir, target)
    fill_model_folder(config, run.root, target, where=where)
    if (target / BASE_FILE).is_file():  # no path of this machine in a shared copy: the hub id, else the base's name
        ref = {k: v for k, v in base_reference(config.model).items() if k != "local"}
        atomic_write_json(target / BASE_FILE, ref)
        adapter = json.loads((target / "adapter_config.json").read_text(encoding="utf-8"))
        adapter["base_model_name_or_path"] = ref["hub_id"] or ref["name"]
        atomic_write_json(target / "adapter_config.json", adapter)
    comparison = run.eval / "comparison.json"
    if comparison.is_file():
        shutil.copy2(comparison, target / "comparison.json")
    for folder in _complete_exports(run):
        _copy_folder(folder, target / folder.name)
        atomic_write_text(target / folder.name / CARD_FILE,
                          model_card(config, run.root, kind=folder_kind(folder), where=f"{where}/{folder.name}"))
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())


def export_to_dir(config: Config, run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """The layout in ``out_dir``, written whole or not at all. An existing folder is replaced only when it is an
    earlier tunewise share (it has tunewise's card); any other non-empty folder is refused."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and "- tunewise" not in _read(out / CARD_FILE):
        raise ValueError(f"{out} is a folder that is not empty and not an earlier tunewise export; "
                         "choose a new folder for --to-dir")
    with atomic_dir(out) as tmp:
        files = share_layout(config, run_dir, tmp, where=str(out.resolve()))
    return {"to_dir": str(out), "files": files}


def push_to_hub(config: Config, run_dir: str | Path, repo: str, *, private: bool = False,
                token: str | None = None) -> dict[str, Any]:
    """Upload the layout to the hub repository ``repo`` (created when missing) with ``huggingface_hub.HfApi``."""
    from huggingface_hub import HfApi

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"--push-to-hub takes a repository id like USER/NAME, got {repo!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="tunewise-share-") as tmp:
        files = share_layout(config, run_dir, Path(tmp), where=repo)
        url = api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, repo_type="model", folder_path=tmp,
                                   commit_message=f"tunewise export of run {config.name}")
    return {"repo": repo, "url": str(url), "commit": str(getattr(commit, "oid", commit)), "files": files}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def describe(report: dict[str, Any]) -> str:
    """One line for the console."""
    where = report.get("to_dir") or report.get("url") or report.get("repo")
    return f"{len(report['files'])} files -> {where}"

