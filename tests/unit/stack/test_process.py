from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mlplatform.stack import process


@pytest.fixture
def listener():
    """A real process (not this one) listening on a port."""
    port = process.free_port()
    code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(100):
        if process.port_listening(port):
            break
        time.sleep(0.05)
    yield port, proc
    proc.kill()
    proc.wait()


def test_port_in_use_names_port_and_process(listener):
    port, proc = listener
    with pytest.raises(process.PortInUseError) as err:
        process.check_port_free(port, "kafka", own_pids=set())
    msg = str(err.value)
    assert f"port {port}" in msg
    assert f"pid {proc.pid}" in msg
    assert "python" in msg
    assert "MLP_KAFKA_PORT" in msg


def test_own_process_on_port_is_fine(listener):
    port, proc = listener
    assert process.check_port_free(port, "kafka", own_pids={proc.pid}) is None
    # the same busy port without the listener among own_pids is refused: own_pids is what made it pass
    with pytest.raises(process.PortInUseError, match=f"pid {proc.pid}"):
        process.check_port_free(port, "kafka", own_pids=set())


def test_free_port_passes():
    port = process.free_port()
    assert not process.port_listening(port)
    assert process.check_port_free(port, "redis", own_pids=set()) is None


def test_spawn_and_stop_only_what_was_started(tmp_path):
    pid_file, log = tmp_path / "x.pid", tmp_path / "x.log"
    rec = process.spawn(
        [sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"],
        pid_file=pid_file,
        log_file=log,
        env={"PATH": "/usr/bin"},
    )
    assert rec.alive()
    assert process.read_pid(pid_file) == rec
    assert process.stop(pid_file) is True
    assert not rec.alive()
    assert not pid_file.exists()
    assert process.stop(pid_file) is False
    assert "hi" in process.tail(log)


def test_recycled_pid_is_not_ours(tmp_path):
    pid_file = tmp_path / "y.pid"
    pid_file.write_text('{"pid": 1, "create_time": 12.0}')
    rec = process.read_pid(pid_file)
    assert rec is not None
    assert not rec.alive()
    assert process.stop(pid_file) is False
