"""tts-serve's batching gain: several concurrent clients against a server that batches their requests, as a
ratio against the same clients served one request at a time.

    python scripts/benchmark_serve.py                          # embedded shapes model, 1/2/4/8 clients
    python scripts/benchmark_serve.py --clients 4 --candidates 2 --requests 6 --repeats 7
    python scripts/benchmark_serve.py --serve-args pipeline=sdxl pipeline.dtype=fp16 --model sdxl --steps 30

Two real servers run in their own processes on 127.0.0.1: one with ``server.batch_size=--batch-size``
(same-model requests waiting together share one pipeline call) and one with ``server.batch_size`` equal to
the request size (one request per call). Each client is a thread with its own HTTP connection and client
id that sends ``--requests`` requests of ``--candidates`` noises one after another, as a search does; the
wall time for all clients to finish is measured. Modes are interleaved (each repeat runs both, in
alternating order) and medians reported; only one server works at a time.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tts.core.noise import fresh  # noqa: E402


def start(batch_size: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tts.app.serve", "server.port=0", f"server.batch_size={batch_size}",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    for line in proc.stdout:
        if "serving on " in line:
            return proc, line.split("serving on ")[1].split()[0]
    raise SystemExit(f"tts-serve (batch_size {batch_size}) did not start")


def workload(url: str, args, clients: int, round_: int) -> float:
    """Seconds for ``clients`` concurrent clients to get ``--requests`` answers each."""
    errors = []

    def client(c: int) -> None:
        with httpx.Client(timeout=600, headers={"X-TTS-Client": f"bench-{c}"}) as http:
            for r in range(args.requests):
                seeds = [10_000 * round_ + 100 * c + args.candidates * r + i for i in range(args.candidates)]
                body = {"model": args.model, "prompt": f"{args.prompt} {c}", "lineages": [fresh(s) for s in seeds],
                        "num_inference_steps": args.steps}
                answer = http.post(f"{url}/generate", json=body)
                if answer.status_code != 200 or len(answer.json()["images"]) != args.candidates:
                    errors.append(answer.text[:300])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start_s = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a request failed: {errors[0]}")
    return time.perf_counter() - start_s


def counters(url: str) -> tuple[int, int]:
    devices = httpx.get(f"{url}/health").json()["devices"].values()
    return sum(d["batches"] for d in devices), sum(d["rows"] for d in devices)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,2,4,8", help="concurrent clients, one row of the table each")
    p.add_argument("--candidates", type=int, default=1, help="noises per request")
    p.add_argument("--requests", type=int, default=8, help="requests per client, one after another")
    p.add_argument("--batch-size", type=int, default=8, help="the batching server's server.batch_size")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--model", default="shapes")
    p.add_argument("--prompt", default="two red circles and a blue triangle")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--serve-args", nargs="*", default=[], help="further tts-serve overrides for both servers")
    args = p.parse_args(argv)
    extra = [f"models.preload=[{args.model}]", *args.serve_args]
    servers = {"one at a time": start(args.candidates, extra), "batched": start(args.batch_size, extra)}
    try:
        for _, url in servers.values():  # warm-up: first calls, prompt encodings
            workload(url, args, max(int(c) for c in args.clients.split(",")), 999)
        print("| clients | candidates/request | one at a time s (median) | batched s (median) | mean batch | "
              "throughput gain |\n|---|---|---|---|---|---|")
        for clients in (int(c) for c in args.clients.split(",")):
            times = {mode: [] for mode in servers}
            rows_batches = [0, 0]
            for rep in range(args.repeats):
                for mode in (list(servers) if rep % 2 == 0 else list(servers)[::-1]):
                    url = servers[mode][1]
                    b0, r0 = counters(url)
                    times[mode].append(workload(url, args, clients, rep))
                    b1, r1 = counters(url)
                    if mode == "batched":
                        rows_batches[0] += r1 - r0
                        rows_batches[1] += b1 - b0
            one, batched = (statistics.median(times[m]) for m in ("one at a time", "batched"))
            print(f"| {clients} | {args.candidates} | {one:.2f} | {batched:.2f} | "
                  f"{rows_batches[0] / max(1, rows_batches[1]):.1f} | x{one / batched:.2f} |", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
