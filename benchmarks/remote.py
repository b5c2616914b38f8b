"""Texts/s through a vLLM server: JSON floats vs. the compact transfer formats, and the ratio.

Encodes SciFact abstracts (dense + token vectors, as ``Encoder.encode`` does: client-side
token ids, one ``/pooling`` token_embed request per batch, pooling and normalisation in the
client) through the same server with ``transfer="json"`` (nested floats), ``"base64"`` (the
default) and ``"bytes"``, and prints texts/s, the response size per batch and the ratios.

    .venv/bin/python benchmarks/remote.py                  # starts a CPU server on 127.0.0.1
    .venv/bin/python benchmarks/remote.py --base-url http://127.0.0.1:8000   # an existing one
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
FORMATS = ("json", "base64", "bytes")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    env.update(VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--runner", "pooling",
        "--pooler-config", json.dumps({"task": "token_embed", "use_activation": False}),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--seed", "0",
    ]  # fmt: skip
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"server not healthy after {limit:.0f} s:\n{log.read_text()[-3000:]}")


def load_docs(path: Path, n: int) -> list[str]:
    docs: list[str] = []
    with path.open() as fh:
        for line in fh:
            row = json.loads(line)
            docs.append((row.get("title", "") + " " + row["text"]).strip())
            if len(docs) == n:
                break
    return docs


def response_bytes(url: str, model: str, ids: list[list[int]], transfer: str) -> int:
    """Size of one /pooling answer for ``ids`` in ``transfer``."""
    body = {
        "model": model,
        "input": ids,
        "task": "token_embed",
        "use_activation": False,
        "encoding_format": "float" if transfer == "json" else transfer,
        "endianness": "little",
    }
    resp = httpx.post(f"{url}/pooling", json=body, timeout=600.0)
    resp.raise_for_status()
    return len(resp.content)


def run(url: str, docs: list[str], repeats: int, batch: int) -> None:
    from vllm_retrieval import Encoder

    enc = Encoder(base_url=url, timeout=600.0, batch_size=batch).start()
    ids = enc.token_ids(docs, is_query=False)
    tokens = sum(len(i) for i in ids)
    info = enc.remote_engine().info
    print(
        f"server {url}: {info.model} (dim {info.dim}, max_model_len {info.max_model_len}); "
        f"{len(docs)} SciFact docs, {tokens} tokens, {batch} texts per request"
    )
    engines = {t: enc.remote_engine(transfer=t) for t in FORMATS}
    for engine in engines.values():
        engine.wait_ready()
        engine.submit(ids[:8]).result()  # warm up connections and the server
    best: dict[str, float] = {}
    for r in range(repeats):
        for transfer in FORMATS:  # interleaved, so load drift hits every format alike
            engine = engines[transfer]
            start = time.perf_counter()
            futures = [engine.submit(ids[i : i + batch]) for i in range(0, len(ids), batch)]
            rows = [row for f in futures for row in f.result()]
            out = [enc._finish(i, x, is_query=False) for i, x in zip(ids, rows, strict=True)]
            secs = time.perf_counter() - start
            assert len(out) == len(docs)
            best[transfer] = min(best.get(transfer, secs), secs)
            print(f"  run {r + 1} {transfer:>6}: {secs:7.2f} s  {len(docs) / secs:7.1f} texts/s")
    sizes = {t: response_bytes(url, info.model, ids[:batch], t) for t in FORMATS}
    print()
    print(f"{'transfer':>9} {'texts/s':>9} {'tokens/s':>9} {'MB/batch':>9} {'vs json':>8}")
    for transfer in FORMATS:
        rate = len(docs) / best[transfer]
        ratio = best["json"] / best[transfer]
        mb = sizes[transfer] / 1e6
        print(f"{transfer:>9} {rate:9.1f} {tokens / best[transfer]:9.0f} {mb:9.2f} {ratio:7.2f}x")
    print(
        f"compact (base64) / JSON floats: {best['json'] / best['base64']:.2f}x texts/s, "
        f"{sizes['json'] / sizes['base64']:.1f}x fewer response bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="an existing token_embed server (default: start one)")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="texts per request")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    docs = load_docs(args.corpus, args.docs)
    if args.base_url:
        run(args.base_url.rstrip("/"), docs, args.repeats, args.batch)
        return
    from vllm_retrieval.encoding.profiles import default_model_path

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is killed too
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(default_model_path(), port, log)
        try:
            wait_healthy(url, proc, log, limit=900)
            run(url, docs, args.repeats, args.batch)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
