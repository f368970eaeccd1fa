"""Start, stop and inspect long-running service processes with pid files and logs.

Each service runs in its own process group so ``down`` can stop it and everything it spawned, and
only what ``up`` started (the pid file records the pid and its start time, so a recycled pid from an
unrelated process is never killed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class PortInUseError(RuntimeError):
    """A port the stack needs is held by a process the stack did not start."""


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def read_pid(pid_file: Path) -> PidRecord | None:
    if not pid_file.exists():
        return None
    try:
        data = json.loads(pid_file.read_text())
        return PidRecord(int(data["pid"]), float(data["create_time"]))
    except (ValueError, KeyError, json.JSONDecodeError):
        return None


def port_owner(port: int) -> psutil.Process | None:
    """The process listening on ``port`` (any address), or None when the port is free."""
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                return psutil.Process(conn.pid)
            except psutil.Error:
                return None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it), for a service a test or a tool starts beside
    the stack. Another process may take it before it is used: bind soon."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_listening(port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in psutil.net_connections(kind="inet")
    )


def check_port_free(port: int, service: str, own_pids: set[int]) -> None:
    """Raise PortInUseError naming the port and the owning process unless the port is ours or free."""
    if not port_listening(port):
        return
    owner = port_owner(port)
    if owner is not None and (owner.pid in own_pids or _ancestor_in(owner, own_pids)):
        return
    if owner is None:
        who = "an unknown process (run as root, or `ss -ltnp`, to see it)"
    else:
        try:
            cmd = " ".join(owner.cmdline())[:120] or owner.name()
        except psutil.Error:
            cmd = owner.name()
        who = f"pid {owner.pid} ({owner.name()}: {cmd})"
    raise PortInUseError(
        f"port {port} needed by {service} is already in use by {who}. "
        f"Stop that process or set MLP_{service.upper().replace('-', '_')}_PORT to another port."
    )


def _ancestor_in(proc: psutil.Process, pids: set[int]) -> bool:
    try:
        return any(p.pid in pids for p in proc.parents())
    except psutil.Error:
        return False


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> PidRecord:
    """Start ``argv`` detached in its own session, logging to ``log_file``; record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the stack, never from user input
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    record = PidRecord(proc.pid, psutil.Process(proc.pid).create_time())
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": record.pid, "create_time": record.create_time, "argv": list(argv)}))
    tmp.replace(pid_file)
    return record


def stop(pid_file: Path, timeout: float = 20.0) -> bool:
    """Stop the process group recorded in ``pid_file``. Returns True when something was stopped."""
    record = read_pid(pid_file)
    if record is None:
        return False
    stopped = False
    if record.alive():
        try:
            procs = [psutil.Process(record.pid), *psutil.Process(record.pid).children(recursive=True)]
        except psutil.Error:
            procs = []
        try:
            os.killpg(record.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(record.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def tail(path: Path, lines: int = 50) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])
