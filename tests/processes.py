"""Helpers for tests that start several processes on 127.0.0.1."""

import socket
import subprocess


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def communicate_all(processes, timeout=900):
    """Waits for every `Popen` (a dict or a list); kills the rest on error.

    Returns `{key: (returncode, stdout, stderr)}` (keys are list indices for a list).
    """
    items = processes.items() if isinstance(processes, dict) else enumerate(processes)
    outputs = {}
    try:
        for key, process in items:
            out, err = process.communicate(timeout=timeout)
            outputs[key] = (process.returncode, out, err)
    finally:
        for process in (processes.values() if isinstance(processes, dict) else processes):
            if process.poll() is None:
                process.kill()
    return outputs


def popen(command, env):
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
