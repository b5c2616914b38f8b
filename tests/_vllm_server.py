"""A real ``vllm serve`` (the OpenAI-compatible API server) on 127.0.0.1 for tests: the
documented server command with the in-process engine's settings, started in its own process
group, waited for on ``/health``, and SIGKILLed with its engine processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_vllm(model: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m vllm.entrypoints.openai.api_server`` serving ``model`` (float32, eager,
    token_embed without activation, as the in-process engine), output in ``log``."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    env.update(VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--runner", "pooling",
        "--pooler-config", json.dumps({"task": "token_embed", "use_activation": False}),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--seed", "0", *extra,
    ]  # fmt: skip
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 900) -> None:
    """Until ``/health`` answers 200; the test fails (with the log's tail) if the server exits
    or is not healthy within ``limit`` seconds (a busy 2-core machine is slow)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"vLLM server not healthy after {limit:.0f} s:\n{log.read_text()[-3000:]}")


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and its engine process (its own process group, by id)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
