"""Run ``tunewise`` commands as separate processes without paying the library import each time.

A real ``python -m tunewise train`` spends 10-30 s on this shared machine importing torch, transformers, peft and
bitsandbytes before it reads its config. Tests that start many commands (kill-and-resume, two writers on one run)
start one *zygote* instead: a Python process that imports the command line and those libraries once and then, for
each command, ``fork()``s a child that runs ``tunewise.cli`` with the command's arguments. Each command is its own
process: its own pid (the test SIGKILLs it), its own stdout/stderr files, its own exit code, and no state shared with
the test process. The zygote starts no thread and runs no torch operation before forking.

Tests that check the entry point itself (``python -m tunewise``) still start it with :func:`subprocess.run`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_ZYGOTE = r"""
import json, os, sys, traceback
os.environ.setdefault("OMP_NUM_THREADS", "1")
import tunewise.cli as cli
# what the commands import lazily: imported once here, before any fork
cli._quiet_libraries()
import transformers, peft, datasets  # noqa: F401
from transformers import Trainer  # noqa: F401
import tunewise.train.run, tunewise.train.trainer, tunewise.pipeline, tunewise.data.prepare  # noqa: F401
import tunewise.monitor.session, tunewise.evaluate.run  # noqa: F401

def child(request):
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1); os.dup2(err, 2)
    os.environ.update(request.get("env") or {})
    if request.get("cwd"):
        os.chdir(request["cwd"])
    code = 0
    try:
        cli.app(args=request["args"], prog_name="tunewise", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)

print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if "args" in request:
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
    elif "wait" in request:
        flags = os.WNOHANG if request.get("nohang") else 0
        done, status = os.waitpid(request["wait"], flags)
        code = None if done == 0 else (os.waitstatus_to_exitcode(status))
        print(json.dumps({"code": code}), flush=True)
"""


@dataclass
class Command:
    """One forked ``tunewise`` command."""

    pid: int
    stdout_path: Path
    stderr_path: Path
    zygote: "Zygote"
    code: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self.code is None:
            self.code = self.zygote._wait(self.pid, nohang=True)
        return self.code

    def wait(self, timeout: float = 300) -> int:
        deadline = time.time() + timeout
        while self.poll() is None:
            if time.time() > deadline:
                self.kill()
                raise TimeoutError(f"tunewise command (pid {self.pid}) ran over {timeout} s")
            time.sleep(0.05)
        assert self.code is not None
        return self.code

    def kill(self) -> None:
        """SIGKILL, from the test: no handler in the command runs."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


class Zygote:
    """A Python with tunewise's command line imported; :meth:`start` forks one command from it."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=open(self.workdir / "zygote.err", "w"), text=True, env=full_env)
        self.count = 0
        ready = self._read()
        assert "ready" in ready, ready

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the zygote died: " + (self.workdir / "zygote.err").read_text())
        return json.loads(line)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def _wait(self, pid: int, nohang: bool) -> int | None:
        return self._ask({"wait": pid, "nohang": nohang})["code"]

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Command:
        self.count += 1
        out, err = self.workdir / f"cmd{self.count}.out", self.workdir / f"cmd{self.count}.err"
        reply = self._ask({"args": [str(a) for a in args], "stdout": str(out), "stderr": str(err), "env": env or {},
                           "cwd": str(cwd) if cwd else None})
        return Command(reply["pid"], out, err, self)

    def run(self, *args: str, timeout: float = 300, **kwargs: Any) -> Command:
        command = self.start(*args, **kwargs)
        command.wait(timeout)
        return command

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=30)
