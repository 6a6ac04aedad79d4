"""Verification concurrency: one setting (verifier.max_concurrency). With verify_concurrency=auto (the
default) the loop keeps that many API requests in flight at any batch size, measured at a real
loopback server with the real clients."""
import pytest
from conftest import compose, run_tts

from tts.app.build import build_job
from tts.verifiers.loopback import LoopbackGrader

KEY = "sk-test-Zq8xVt3LmN0pRs7Ku2Wy"


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.mark.parametrize("batch_size,limit,workers", [(1, 8, 8), (2, 8, 4), (8, 8, 2), (3, 4, 2), (1, 1, 2)])
def test_auto_workers_cover_the_verifiers_concurrency(batch_size, limit, workers, tmp_path):
    job = build_job(compose(["verifier=openai", f"batch_size={batch_size}", f"verifier.max_concurrency={limit}"]),
                    tmp_path)
    assert job.verify_workers == workers
    assert workers * batch_size >= limit
    job = build_job(compose(["verifier=openai", "verify_concurrency=3"]), tmp_path)
    assert job.verify_workers == 3


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["gemini", "openai"])
def test_max_concurrency_requests_are_in_flight_at_batch_size_one(protocol, tmp_path):
    """Round 1's 12 images are generated while the API is down (all recorded failed); the rerun re-verifies
    them from disk, so in-flight requests are bounded only by the loop's workers and the verifier."""
    over = [f"verifier={protocol}", "verifier.max_concurrency=6", "batch_size=1", "search=random",
            "search.schedule=constant", "search.per_round=12", "search.rounds=1", "pipeline.num_inference_steps=2",
            "verifier.max_attempts=1"]
    suffix = "" if protocol == "gemini" else "/v1"
    summary = run_tts([*over, f"verifier.base_url=http://127.0.0.1:{closed_port()}{suffix}"], tmp_path)
    assert summary["failed"] == 12
    with LoopbackGrader(latency_s=1.0, api_key=KEY) as server:
        summary = run_tts([*over, f"verifier.base_url={server.url}{suffix}"], tmp_path)
        assert server.max_inflight == 6 and summary["failed"] == 0
