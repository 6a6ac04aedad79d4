"""The Gemini and OpenAI verifiers with their real clients (google-genai, openai) against a real HTTP
server on 127.0.0.1 speaking both wire protocols (tts.verifiers.loopback), with injected faults."""
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import time

import pytest
import typing_extensions
from PIL import Image

from conftest import run_tts
from tts.verifiers.loopback import LoopbackGrader, score_image
from tts.core.runfolder import read_manifest
from tts.verifiers import grading

KEY = "sk-test-Zq8xVt3LmN0pRs7Ku2Wy"
PROTOCOLS = ["gemini", "openai"]
# timeout_s: far above a loopback answer (tens of ms) even on a starved CPU, so only injected "slow"
# answers time out; a normal answer that timed out under load would add a request the plan did not.
FAST = ["pipeline.num_inference_steps=2", "verifier.backoff_s=0.01", "verifier.max_backoff_s=0.05",
        "verifier.timeout_s=5"]


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def base_url(server, protocol):
    return server.url if protocol == "gemini" else server.url + "/v1"


def image_key(path) -> str:
    """The key the server sees: sha256 of the image bytes the verifier sends (PNG re-encoded, not downscaled)."""
    return sent_key(Image.open(path))


def sent_key(image: Image.Image) -> str:
    data, _ = grading.encode_image(image, 768, "png")
    return hashlib.sha256(data).hexdigest()[:16]


PERMANENT = {0: "malformed", 1: "schema", 2: "safety"}
TRANSIENT = {3: ["429", "429-retry-after"], 4: ["500", "503"], 5: ["slow"], 6: ["drop"], 7: ["429", "drop", "503"],
             8: ["body-not-json", "body-off-schema"]}


def fault_plan(key: str, attempt: int):
    """Per image (by key): some always answer unusably, others fail transiently then succeed, the rest are clean."""
    kind = int(key, 16) % 10
    if kind in PERMANENT:
        return PERMANENT[kind]
    seq = TRANSIENT.get(kind, [])
    return seq[attempt - 1] if attempt <= len(seq) else None


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_search_over_a_faulty_server_records_every_outcome_and_a_rerun_completes_it(tmp_path, protocol):
    over = [f"verifier={protocol}", "search.rounds=3", "batch_size=4", *FAST,
            "verifier.max_concurrency=4", "verifier.price_per_million_input_tokens=2.0",
            "verifier.price_per_million_output_tokens=10.0"]
    with LoopbackGrader(faults=fault_plan, api_key=KEY, slow_s=60.0) as server:
        summary = run_tts([*over, f"verifier.base_url={base_url(server, protocol)}"], tmp_path)
        stats = dict(server.stats)
    records = read_manifest(tmp_path)
    assert len(records) == 2 + 4 + 8
    kinds = {r.image: int(image_key(tmp_path / r.image), 16) % 10 for r in records}
    assert len(set(kinds.values()) & set(PERMANENT)) >= 1 and len(set(kinds.values()) & set(TRANSIENT)) >= 2
    for r in records:
        kind = kinds[r.image]
        if kind in PERMANENT:
            assert r.status == "failed" and r.score is None
            want = {"malformed": "malformed JSON", "schema": "breaks the schema",
                    "safety": "blocked" if protocol == "gemini" else "refused"}[PERMANENT[kind]]
            assert want in r.error and "after 4 attempts" in r.error and r.usage.requests == 4
        else:  # transient faults were retried away; the score is the one for this very image
            assert r.status == "ok", r.error
            assert r.score == score_image(Image.open(tmp_path / r.image))
            assert set(r.scores[protocol]) == set(grading.METRICS)
            assert r.usage.requests == 1 + len(TRANSIENT.get(kind, []))
    # tokens: everything the server reported in the answers it sent (a slow answer is never sent: the
    # client hangs up at its timeout first), summed into the summary, priced from the config
    usage = summary["usage"]
    assert usage["input_tokens"] == stats["input_tokens"] and usage["output_tokens"] == stats["output_tokens"]
    assert usage["requests"] == stats["requests"] == sum(r.usage.requests for r in records)
    assert usage["cost_usd"] == pytest.approx((2.0 * stats["input_tokens"] + 10.0 * stats["output_tokens"]) / 1e6)
    assert summary["failed"] == sum(kinds[r.image] in PERMANENT for r in records)

    # a healthy server now: the rerun re-verifies only the failed candidates, from their saved images
    failed = {r.image for r in records if r.status == "failed"}
    mtimes = {r.image: (tmp_path / r.image).stat().st_mtime_ns for r in records}
    with LoopbackGrader(api_key=KEY) as server:
        summary = run_tts([*over, f"verifier.base_url={base_url(server, protocol)}"], tmp_path)
        assert server.stats["requests"] == len(failed)
    assert summary["failed"] == 0
    assert {r.image: (tmp_path / r.image).stat().st_mtime_ns for r in records} == mtimes


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_requests_in_flight_never_exceed_max_concurrency(tmp_path, protocol):
    with LoopbackGrader(latency_s=0.3, api_key=KEY) as server:
        run_tts([f"verifier={protocol}", f"verifier.base_url={base_url(server, protocol)}", "verifier.max_concurrency=3",
                 "search=random", "search.schedule=constant", "search.per_round=12", "search.rounds=1",
                 "batch_size=6", "verify_concurrency=2", *FAST], tmp_path)
        assert server.stats["requests"] == 12
        assert server.max_inflight == 3  # bounded, and the bound is reached (requests really run concurrently)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_is_honoured(protocol):
    from tts.verifiers.gemini import GeminiVerifier
    from tts.verifiers.openai import OpenAIVerifier

    times = []

    def plan(key, attempt):
        times.append(time.monotonic())
        return "429-retry-after" if attempt == 1 else None

    with LoopbackGrader(faults=plan, api_key=KEY, retry_after_s=0.4) as server:
        cls = GeminiVerifier if protocol == "gemini" else OpenAIVerifier
        verifier = cls(base_url=base_url(server, protocol), backoff_s=0.0, max_backoff_s=1.0)
        verifier.setup()
        [verdict] = verifier.score(["a red circle"], [Image.new("RGB", (32, 32), "red")])
        verifier.close()
    assert verdict.error is None and verdict.usage.requests == 2
    assert times[1] - times[0] >= 0.4  # waited as told, although backoff_s is 0


def verifier_for(server, protocol, **kwargs):
    from tts.verifiers.gemini import GeminiVerifier
    from tts.verifiers.openai import OpenAIVerifier

    verifier = (GeminiVerifier if protocol == "gemini" else OpenAIVerifier)(base_url=base_url(server, protocol), **kwargs)
    verifier.setup()
    return verifier


@pytest.mark.parametrize("fault,reason", [("body-not-json", "response body is not JSON"),
                                          ("body-off-schema", "response body breaks the")])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_200_with_an_unusable_body_is_retried_then_recorded_as_failed(protocol, fault, reason):
    flaky, broken = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    plan = {sent_key(flaky): lambda attempt: fault if attempt <= 2 else None, sent_key(broken): lambda attempt: fault}
    with LoopbackGrader(faults=lambda key, attempt: plan[key](attempt), api_key=KEY) as server:
        verifier = verifier_for(server, protocol, backoff_s=0.01, max_backoff_s=0.05)
        ok, failed = verifier.score(["a red circle", "a blue square"], [flaky, broken])
        verifier.close()
    assert ok.error is None and ok.scores["overall_score"].score == 10 and ok.usage.requests == 3
    assert failed.scores is None and failed.usage.requests == 4 and failed.usage.input_tokens == 0
    assert failed.error.startswith(reason) and failed.error.endswith("(after 4 attempts)"), failed.error
    assert "\n" not in failed.error and len(failed.error) < 300


def half_coloured() -> Image.Image:
    """White with its top half blue: the loopback server grades it 5."""
    image = Image.new("RGB", (32, 32), "white")
    image.paste((0, 0, 255), (0, 0, 32, 16))
    return image


class _Grade(typing_extensions.TypedDict):  # a caller's own item shape: score a float, explanation after it
    score: float
    explanation: str


class _Grading(typing_extensions.TypedDict):
    accuracy_to_prompt: _Grade
    overall_score: _Grade


def test_loopback_answers_gemini_in_the_shape_of_the_response_schema_sent():
    """google-genai as tt-scale-flux calls it (response_schema=list[...], the item a TypedDict) gets a list,
    one item per image; an object schema gets an object; responseJsonSchema is honoured as well."""
    from google import genai
    from google.genai import types
    from pydantic import TypeAdapter

    red, half = Image.new("RGB", (32, 32), "red"), half_coloured()

    def parts(*images):
        return [p for img in images for p in (types.Part.from_text(text="a prompt"), types.Part.from_bytes(
            data=grading.encode_image(img, 768, "png")[0], mime_type="image/png"))]

    with LoopbackGrader(api_key=KEY) as server:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=server.url, api_version="v1beta"))

        def ask(images, **config):
            config = types.GenerateContentConfig(system_instruction="Grade the image.", seed=1994,
                                                 response_mime_type="application/json", **config)
            return client.models.generate_content(model="gemini-2.0-flash", config=config,
                                                  contents=types.Content(parts=parts(*images), role="user"))

        [one] = ask([red], response_schema=list[_Grading]).parsed
        assert one == {"accuracy_to_prompt": {"score": 10.0, "explanation": "accuracy to prompt: 10/10 by colour coverage"},
                       "overall_score": {"score": 10.0, "explanation": "overall score: 10/10 by colour coverage"}}
        two = ask([red, half], response_schema=list[_Grading]).parsed
        assert [g["overall_score"]["score"] for g in two] == [10.0, 5.0]
        listed = ask([half], response_json_schema=TypeAdapter(list[grading.Grades]).json_schema()).text
        assert [g.overall_score.score for g in TypeAdapter(list[grading.Grades]).validate_json(listed)] == [5]
        single = ask([half], response_schema=grading.Grades).parsed
        assert isinstance(single, grading.Grades) and single.overall_score.score == 5
        assert list(json.loads(ask([half]).text)) == list(grading.METRICS)  # no schema: the six-metric object


def test_loopback_answers_openai_in_the_shape_of_the_response_format_sent():
    from openai import OpenAI
    from pydantic import BaseModel, TypeAdapter

    class Score(BaseModel):  # tt-scale-flux's OpenAI shape: score before explanation
        score: int
        explanation: str

    class Grading(BaseModel):
        accuracy_to_prompt: Score
        overall_score: Score

    red, half = Image.new("RGB", (32, 32), "red"), half_coloured()

    def message(*images):
        return [{"role": "system", "content": "Grade the images."}, {"role": "user", "content": [
            {"type": "text", "text": "a prompt"}, *({"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(grading.encode_image(i, 768, "png")[0]).decode()}}
                for i in images)]}]

    with LoopbackGrader(api_key=KEY) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        parsed = client.chat.completions.parse(model="gpt-4o", messages=message(red), response_format=Grading)
        want = Score(score=10, explanation="overall score: 10/10 by colour coverage")
        assert parsed.choices[0].message.parsed.overall_score == want
        schema = TypeAdapter(list[Grading]).json_schema()
        array = {"type": "json_schema", "json_schema": {"name": "gradings", "schema": schema}}
        answer = client.chat.completions.create(model="gpt-4o", messages=message(red, half), response_format=array)
        gradings = TypeAdapter(list[Grading]).validate_json(answer.choices[0].message.content)
        assert [g.overall_score.score for g in gradings] == [10, 5]


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    import random

    policy = grading.RetryPolicy(max_attempts=6, timeout_s=1, backoff_s=1.0, max_backoff_s=5.0)
    rng = random.Random(0)
    delays = [policy.delay(a, None, rng) for a in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4 and all(d <= 5 for d in delays)
    assert len({round(d, 6) for d in delays}) == 5  # jittered
    assert policy.delay(1, 2.5, rng) == 2.5  # the server's Retry-After wins
    assert grading.retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert grading.retry_after_seconds({"retry-after": "3"}) == 3.0
    with pytest.raises(ValueError, match="max_attempts"):
        grading.RetryPolicy(max_attempts=0)


@pytest.mark.parametrize("protocol,var", [("gemini", "GEMINI_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_missing_key_fails_before_generation_naming_the_variable(tmp_path, protocol, var, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "OPENAI_API_KEY")}
    out = subprocess.run([sys.executable, "-m", "tts.app.cli", f"verifier={protocol}", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert var in out.stderr + out.stdout
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "manifest.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keys_never_reach_the_run_folder_or_the_console(tmp_path, protocol):
    with LoopbackGrader(api_key=KEY) as server:  # the server refuses requests without the right key
        env = dict(os.environ, GEMINI_API_KEY=KEY, OPENAI_API_KEY=KEY)
        out = subprocess.run([sys.executable, "-m", "tts.app.cli", f"verifier={protocol}", "search.rounds=1",
                              f"verifier.base_url={base_url(server, protocol)}", "pipeline.num_inference_steps=2",
                              f"hydra.run.dir={tmp_path}", "hydra.job_logging.root.level=DEBUG", "hydra.verbose=true"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(r.status == "ok" for r in read_manifest(tmp_path))
    assert KEY not in out.stdout + out.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "tts-search.log").exists() and (tmp_path / "config.json").exists()
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_third_party_info_lines_stay_off_the_console_unless_hydra_verbose_asks(tmp_path):
    """google-genai logs "AFC is enabled ..." at INFO on every request; tts keeps it (and httpx, ...) at WARNING."""
    with LoopbackGrader(api_key=KEY) as server:
        env = dict(os.environ, GEMINI_API_KEY=KEY)

        def run(*extra):
            out = subprocess.run([sys.executable, "-m", "tts.app.cli", "verifier=gemini", "search.rounds=1",
                                  f"verifier.base_url={server.url}", "pipeline.num_inference_steps=2",
                                  f"hydra.run.dir={tmp_path / str(len(extra))}", *extra],
                                 capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
            return out.stdout + out.stderr + (tmp_path / str(len(extra)) / "tts-search.log").read_text()

        quiet, verbose = run(), run("hydra.verbose=google_genai")
    assert "AFC is enabled" not in quiet and "HTTP Request" not in quiet and "run folder:" in quiet
    assert "AFC is enabled" in verbose  # asked for: the library's own lines are back


def test_prompt_template_and_image_options(tmp_path):
    from tts.verifiers.openai import OpenAIVerifier

    template = tmp_path / "strict.txt"
    template.write_text("Grade strictly. Prompt: {prompt}")
    seen = []

    def plan(key, attempt):
        return None

    with LoopbackGrader(api_key=KEY, faults=plan) as server:
        verifier = OpenAIVerifier(base_url=server.url + "/v1", prompt_path=str(template), max_side=64,
                                  image_format="jpeg", choice_of_metric="accuracy_to_prompt")
        verifier.setup()
        big = Image.new("RGB", (512, 256), "blue")
        [verdict] = verifier.score(["a blue square"], [big])
        verifier.close()
        seen = server.stats["input_tokens"]
    assert verdict.error is None and verdict.scores["accuracy_to_prompt"].score == 10
    data, mime = grading.encode_image(big, 64, "jpeg")
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (64, 32)
    assert seen == 85 + len(data) // 64 + len("Grade strictly. Prompt: a blue square".split())
    with pytest.raises(ValueError, match="placeholder"):
        (tmp_path / "bad.txt").write_text("no slot")
        OpenAIVerifier(prompt_path=str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="image_format"):
        OpenAIVerifier(image_format="gif")


def test_grades_schema_puts_each_explanation_before_its_score():
    schema = grading.MetricGrade.model_json_schema()
    assert list(schema["properties"]) == ["explanation", "score"]
    assert set(grading.Grades.model_json_schema()["properties"]) == set(grading.METRICS)
    ok = json.dumps({m: {"explanation": "x", "score": 7} for m in grading.METRICS})
    assert grading.parse_grades(ok).overall_score.score == 7
    with pytest.raises(grading.AnswerError, match="schema"):
        grading.parse_grades(ok.replace("7", "11"))  # bounds are checked, not trusted to the API


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_base_url_from_the_clients_own_environment_variable(protocol, monkeypatch):
    from tts.verifiers.gemini import GeminiVerifier
    from tts.verifiers.openai import OpenAIVerifier

    with LoopbackGrader(api_key=KEY) as server:
        var = "GOOGLE_GEMINI_BASE_URL" if protocol == "gemini" else "OPENAI_BASE_URL"
        monkeypatch.setenv(var, base_url(server, protocol))
        verifier = (GeminiVerifier if protocol == "gemini" else OpenAIVerifier)()  # no base_url in the config
        verifier.setup()
        [verdict] = verifier.score(["a red circle"], [Image.new("RGB", (32, 32), "red")])
        verifier.close()
        assert verdict.error is None and server.stats["requests"] == 1


def test_in_loop_search_scores_previews_with_an_api_grader(tmp_path, monkeypatch):
    """An in-loop strategy's previews go to the grader like final images; their usage is counted apart."""
    from conftest import TESTS

    from tts.core.runfolder import PREVIEWS, read_searches

    monkeypatch.syspath_prepend(str(TESTS / "plugins"))
    with LoopbackGrader(api_key=KEY) as server:
        summary = run_tts(["verifier=gemini", f"verifier.base_url={base_url(server, 'gemini')}",
                           "search._target_=tts_test_plugins.TinyInLoop", "+search.eta=0.5", *FAST,
                           "pipeline.num_inference_steps=4"], tmp_path)
        previews = (tmp_path / PREVIEWS).read_text().splitlines()
        [search] = read_searches(tmp_path).values()
        assert len(previews) == search.preview_scores == 3  # the plugin scores 3 previews, then keeps 3 finals
        assert search.usage is not None and search.usage.requests == 3
        assert server.stats["requests"] == 3 + 3
        assert summary["usage"]["requests"] == 6 and summary["verifier_calls"] == 6
