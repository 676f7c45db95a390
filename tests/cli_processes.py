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
cli.quiet_libraries()
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
    if request.get("setup"):  # a test's fault injection (an audit hook), run in the child only
        exec(compile(request["setup"], "<test setup>", "exec"), {"__name__": "__test_setup__"})
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
        flags = (os.WNOHANG if request.get("nohang") else 0) | os.WUNTRACED
        done, status = os.waitpid(request["wait"], flags)
        if done and os.WIFSTOPPED(status):
            print(json.dumps({"code": None, "stopped": True}), flush=True)
        else:
            print(json.dumps({"code": None if done == 0 else os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass
class Command:
    """One forked ``tunewise`` command."""

    pid: int
    stdout_path: Path
    stderr_path: Path
    zygote: "Zygote"
    code: int | None = None

    stopped: bool = False

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs (or is stopped: ``stopped``)."""
        if self.code is None:
            reply = self.zygote._ask({"wait": self.pid, "nohang": True})
            self.code = reply["code"]
            self.stopped = self.stopped or bool(reply.get("stopped"))
        return self.code

    def wait_stopped(self, timeout: float = 300) -> None:
        """Wait until the command stops itself (SIGSTOP from a test's setup hook); fails if it exits instead."""
        deadline = time.time() + timeout
        while not self.stopped:
            if self.poll() is not None:
                raise AssertionError(f"the command exited ({self.code}) before its stop point:\n{self.stderr[-3000:]}")
            if time.time() > deadline:
                self.kill()
                raise TimeoutError(f"tunewise command (pid {self.pid}) did not reach its stop point in {timeout} s")
            time.sleep(0.02)

    def wait(self, timeout: float = 300) -> int:
        deadline = time.time() + timeout
        while self.poll() is None:
            if self.stopped:
                raise AssertionError(f"tunewise command (pid {self.pid}) is stopped, not running")
            if time.time() > deadline:
                self.kill()
                raise TimeoutError(f"tunewise command (pid {self.pid}) ran over {timeout} s")
            time.sleep(0.05)
        assert self.code is not None
        return self.code

    def signal(self, sig: int) -> None:
        """Send ``sig`` (a stopped command counts as running again: it was killed or continued)."""
        self.stopped = False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL, from the test: no handler in the command runs."""
        self.signal(signal.SIGKILL)

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

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              setup: str | None = None) -> Command:
        """Fork ``tunewise ARGS...``; ``setup`` is Python run in the child first (a fault-injection hook)."""
        self.count += 1
        out, err = self.workdir / f"cmd{self.count}.out", self.workdir / f"cmd{self.count}.err"
        reply = self._ask({"args": [str(a) for a in args], "stdout": str(out), "stderr": str(err), "env": env or {},
                           "cwd": str(cwd) if cwd else None, "setup": setup})
        return Command(reply["pid"], out, err, self)

    def run(self, *args: str, timeout: float = 300, **kwargs: Any) -> Command:
        command = self.start(*args, **kwargs)
        command.wait(timeout)
        return command

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=30)


def stop_at_open(path_suffix: str, *, after_step: int | None = None) -> str:
    """Setup code for :meth:`Zygote.start`: the command stops itself (SIGSTOP) when it opens a file whose path ends
    with ``path_suffix`` for writing; with ``after_step``, only once metrics.jsonl logs a train step >= it. The test
    then SIGKILLs it (or sends another signal and SIGCONT): a kill that lands at an exact point (inside a
    checkpoint's write, after a given step)."""
    return f"""
import json, os, signal, sys
_busy = _done = False
_after = {after_step!r}
def _hook(event, args):
    global _busy, _done
    if event != "open" or _busy or _done:
        return
    path, mode = str(args[0]), str(args[1] or "")
    if not path.endswith({path_suffix!r}) or not any(c in mode for c in "wax+"):
        return
    _busy = True
    try:
        if _after is not None:
            steps = [0]
            metrics = os.path.join(os.path.dirname(path), "metrics.jsonl") if path.endswith("metrics.jsonl") else None
            for line in open(metrics, encoding="utf-8") if metrics and os.path.exists(metrics) else ():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("kind") == "train":
                    steps.append(record["step"])
            if max(steps) < _after:
                return
        _done = True  # once: a command continued after its stop (SIGCONT) runs on
        sys.stdout.flush(); sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
    finally:
        _busy = False
sys.addaudithook(_hook)
"""
