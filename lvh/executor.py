"""The real executor: runs external commands, logs each with its arguments and streams its
output line by line through loguru, enforces timeouts, and stops the child (its whole process
group) on Ctrl-C or cancellation."""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import threading
import time
from typing import IO, Any

from loguru import logger

from lvh.api import Cancelled, Command, CommandResult

_TAIL = 60


class SubprocessExecutor:
    """Runs commands with :mod:`subprocess`. One instance may be shared by threads."""

    def __init__(self, *, cancel: threading.Event | None = None, log: Any = None) -> None:
        self.cancel = cancel or threading.Event()
        self.log = log or logger

    def run(self, command: Command) -> CommandResult:
        argv = [os.fspath(a) for a in command.argv]
        env = None
        if command.env:
            env = dict(os.environ)
            env.update(command.env)
        shown = shlex.join(argv)
        if command.cwd:
            shown += f"  (in {command.cwd})"
        # Commands whose output is captured are mostly probes (tool versions, queries): debug.
        self.log.log("DEBUG" if command.capture else "INFO", "$ {}", shown)
        start = time.monotonic()
        if command.interactive:
            return self._run_interactive(command, argv, env, start)

        stdin: int | IO[bytes] = subprocess.DEVNULL if command.input is None else subprocess.PIPE
        try:
            proc = subprocess.Popen(
                argv, cwd=command.cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(argv, 127, "", f"{argv[0]}: command not found", 0.0,
                                 [f"{argv[0]}: command not found"])
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
        out: list[str] = []
        err: list[str] = []
        lock = threading.Lock()

        def pump(stream: IO[bytes], name: str, keep: list[str]) -> None:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with lock:
                    tail.append(line)
                if command.capture:
                    keep.append(line)
                self.log.log(command.log_level, "  {} | {}", name, line)
                if command.on_line is not None:
                    try:
                        command.on_line(name, line)
                    except Exception as e:  # a display callback must not kill the command
                        self.log.debug("on_line callback failed: {}", e)
            stream.close()

        threads = [
            threading.Thread(target=pump, args=(proc.stdout, "stdout", out), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, "stderr", err), daemon=True),
        ]
        for t in threads:
            t.start()
        if command.input is not None and proc.stdin is not None:
            data = command.input.encode() if isinstance(command.input, str) else command.input
            try:
                proc.stdin.write(data)
                proc.stdin.close()
            except BrokenPipeError:
                pass

        timed_out = False
        deadline = start + command.timeout if command.timeout else None
        try:
            while True:
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self.cancel.is_set():
                    self._stop(proc)
                    raise Cancelled("interrupted")
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    self.log.warning("timeout after {:.0f}s, stopping: {}", command.timeout, argv[0])
                    self._stop(proc)
                    break
        except KeyboardInterrupt:
            self._stop(proc)
            raise Cancelled("interrupted") from None
        for t in threads:
            t.join(timeout=5)
        duration = time.monotonic() - start
        rc = proc.returncode if not timed_out else (proc.returncode if proc.returncode is not None else -9)
        self.log.debug("exit {} after {:.2f}s: {}", rc, duration, argv[0])
        return CommandResult(
            argv, rc, "\n".join(out) + ("\n" if out else ""), "\n".join(err) + ("\n" if err else ""),
            duration, list(tail), timed_out,
        )

    def _run_interactive(self, command: Command, argv: list[str], env: dict[str, str] | None,
                         start: float) -> CommandResult:
        proc = subprocess.Popen(argv, cwd=command.cwd, env=env)
        try:
            rc = proc.wait(timeout=command.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.terminate()
            rc, timed_out = proc.wait(), True
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the child too; give it a moment to exit on its own.
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise Cancelled("interrupted") from None
        return CommandResult(argv, rc, "", "", time.monotonic() - start, [], timed_out)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the child's process group, then SIGKILL after 5 s."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
