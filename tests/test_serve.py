"""course_serve (chapter 08): the real server on a free loopback port, real HTTP requests.

Tiny models are saved in the course checkpoint format to a temporary folder (no dataset, no
trained checkpoint needed). One server runs for the module and is always stopped.
"""

import concurrent.futures
import json
import subprocess
import sys

import pytest
import torch

import helpers

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("multipart")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_serve import images  # noqa: E402
from course_serve.inference import GenerateJob, generate_padded  # noqa: E402
from course_serve.loadtest import load_test, percentile  # noqa: E402
from course_serve.process import ServerProcess  # noqa: E402
from course_serve.settings import Settings  # noqa: E402

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # Tiny Shakespeare's


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    config = helpers.gpt.GPTConfig(vocab_size=len(CHARS), block_size=16, n_layer=1, n_head=2,
                                   n_embd=16)  # fmt: skip
    return helpers.gpt.GPT(config).eval()


def save_tiny_models(folder):
    """A tiny ConvNet and GPT saved as chapters 02 and 04 save theirs; returns the two paths."""
    torch.manual_seed(0)
    cnn = helpers.models.ConvNet(channels=(4, 8))
    cnn_config = {"model": cnn.config, "mean": 0.1307, "std": 0.3081}
    cnn_path = helpers.checkpoint.save_checkpoint(folder / "mnist_cnn.pt", cnn, config=cnn_config)
    gpt = tiny_gpt()
    gpt_path = helpers.checkpoint.save_checkpoint(folder / "char_gpt.pt", gpt,
                                                  config=gpt.config.to_dict(), tokenizer=CHARS,
                                                  val_loss=4.2)  # fmt: skip
    return cnn_path, gpt_path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cnn_path, gpt_path = save_tiny_models(tmp_path_factory.mktemp("checkpoints"))
    env = {"COURSE_SERVE_CNN_CHECKPOINT": cnn_path, "COURSE_SERVE_GPT_CHECKPOINT": gpt_path,
           "COURSE_SERVE_BATCH_WINDOW_MS": 20, "COURSE_SERVE_MAX_NEW_TOKENS": 40,
           "COURSE_SERVE_MAX_BODY_BYTES": 50_000, "COURSE_SERVE_THREADS": 1}  # fmt: skip
    with ServerProcess(env=env, start_timeout=60) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=20) as session:
        yield session


def digit_image():
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[4:24, 12:16] = 255  # a "1"
    return image


# ------------------------------------------------------------------------------- good requests


def test_health_names_the_models_and_settings(client):
    body = client.get("/health").json()
    assert body["status"] == "ready" and body["models"]["char_gpt"]["vocab_size"] == len(CHARS)
    assert body["batching"]["enabled"] and body["limits"]["max_new_tokens"] == 40
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_classify_reads_png_form_and_json_alike(client):
    image = digit_image()
    png = images.to_png(image)
    answers = [
        client.post("/classify", content=png, headers={"content-type": "image/png"}),
        client.post("/classify", files={"file": ("digit.png", png, "image/png")}),
        client.post("/classify", json={"pixels": image.tolist()}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    probs = [a.json()["probabilities"] for a in answers]
    assert len(probs[0]) == 10 and abs(sum(probs[0]) - 1) < 1e-4
    assert probs[0] == pytest.approx(probs[1]) and probs[0] == pytest.approx(probs[2], abs=1e-6)
    assert answers[0].json()["digit"] == max(range(10), key=probs[0].__getitem__)


def test_generate_respects_the_request_and_the_seed(client):
    request = {"prompt": "ROMEO:\n", "max_new_tokens": 12, "temperature": 1.0, "top_k": 5,
               "seed": 7}  # fmt: skip
    first, again = (client.post("/generate", json=request).json() for _ in range(2))
    assert (
        first["new_tokens"] == 12 and len(first["text"]) == 12 and set(first["text"]) <= set(CHARS)
    )
    assert first == again  # the same seed gives the same text
    greedy = client.post("/generate", json={"prompt": "a", "max_new_tokens": 5, "temperature": 0})
    assert greedy.status_code == 200 and greedy.json()["new_tokens"] == 5


def test_concurrent_requests_are_batched_on_the_server(server, client):
    before = client.get("/health").json()["batching"]["classify"]
    payload = {"pixels": digit_image().tolist()}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: httpx.post(server.url + "/classify", json=payload,
                                                     timeout=20), range(16)))  # fmt: skip
    assert all(r.status_code == 200 for r in replies)
    after = client.get("/health").json()["batching"]["classify"]
    requests, batches = (after[k] - before[k] for k in ("requests", "batches"))
    assert requests == 16 and batches < requests and after["largest_batch"] > 1


def test_openapi_documents_every_field(client):
    schema = client.get("/openapi.json").json()
    assert {"/classify", "/generate", "/health"} <= schema["paths"].keys()
    body = schema["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"image/png", "multipart/form-data", "application/json"} <= body.keys()
    for name in ("GenerateRequest", "GenerateResponse", "ClassifyResponse", "Health", "Problem"):
        for field, spec in schema["components"]["schemas"][name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    assert body["application/json"]["schema"]["properties"]["pixels"]["description"]


def test_load_test_counts_and_stays_on_loopback(server):
    result = load_test(server.url, lambda i: ("GET", "/health", {}), requests=20, concurrency=4,
                       time_limit=10)  # fmt: skip
    assert result["requests"] == result["ok"] == 20 and result["p50_ms"] <= result["p99_ms"]
    with pytest.raises(ValueError, match="loopback"):
        load_test("http://example.com", lambda i: ("GET", "/", {}))
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5


# -------------------------------------------------------------------------------- bad requests

PNG = {"content-type": "image/png"}
JSON = {"content-type": "application/json"}
BAD_CLASSIFY = {
    "wrong image size": (
        dict(content=images.to_png(torch.zeros(20, 28, dtype=torch.uint8)), headers=PNG),
        422,
        "wrong image size",
    ),  # fmt: skip
    "not an image": (dict(content=b"just some text", headers=PNG), 422, "not a PNG"),
    "truncated png": (dict(content=images.to_png(digit_image())[:60], headers=PNG), 422, "decoded"),
    "empty body": (dict(content=b"", headers=PNG), 422, "empty"),
    "malformed json": (dict(content=b'{"pixels": [[1, 2,', headers=JSON), 422, "malformed JSON"),
    "json 27 rows": (dict(json={"pixels": [[0] * 28] * 27}), 422, "pixels"),
    "json out of range": (dict(json={"pixels": [[300] * 28] * 28}), 422, "less than or equal"),
    "json strings": (dict(json={"pixels": "abc"}), 422, "pixels"),
    "form without file": (dict(files={"other": ("a.png", b"x", "image/png")}), 422, "field 'file'"),
    "unknown content type": (
        dict(content=b"abc", headers={"content-type": "text/plain"}),
        415,
        "Content-Type",
    ),  # fmt: skip
    "oversized body": (dict(content=b"\x89PNG" + b"0" * 60_000, headers=PNG), 413, "limit"),
}


@pytest.mark.parametrize("case", BAD_CLASSIFY, ids=str)
def test_bad_images_get_a_clear_4xx(client, case):
    kwargs, status, words = BAD_CLASSIFY[case]
    reply = client.post("/classify", **kwargs)
    assert reply.status_code == status and words in reply.json()["detail"], reply.text


BAD_GENERATE = {
    "unknown characters": ({"prompt": "héllo €"}, "unknown characters"),
    "too many tokens": ({"prompt": "a", "max_new_tokens": 41}, "too many tokens"),
    "negative temperature": ({"prompt": "a", "temperature": -0.5}, "temperature"),
    "empty prompt": ({"prompt": ""}, "prompt"),
    "top_k zero": ({"prompt": "a", "top_k": 0}, "top_k"),
    "unknown field": ({"prompt": "a", "max_tokens": 5}, "max_tokens"),
    "wrong type": ({"prompt": 5}, "prompt"),
    "prompt too long": ({"prompt": "a" * 2001}, "prompt too long"),
    "boolean seed": ({"prompt": "a", "seed": False}, "seed"),
    "string seed": ({"prompt": "a", "seed": "5"}, "seed"),
    "string stream": ({"prompt": "a", "stream": "yes"}, "stream"),
    "boolean tokens": ({"prompt": "a", "max_new_tokens": True}, "max_new_tokens"),
    "string temperature": ({"prompt": "a", "temperature": "0.5"}, "temperature"),
    "fractional seed": ({"prompt": "a", "seed": 2.5}, "seed"),
}


@pytest.mark.parametrize("case", BAD_GENERATE, ids=str)
def test_bad_generate_requests_get_a_clear_422(client, case):
    body, words = BAD_GENERATE[case]
    reply = client.post("/generate", json=body)
    assert reply.status_code == 422 and words in reply.json()["detail"], reply.text


def test_malformed_json_and_chunked_oversize_bodies(client, server):
    reply = client.post("/generate", content=b"{'prompt': 'a'", headers=JSON)
    assert reply.status_code == 422 and "malformed JSON" in reply.json()["detail"]
    chunks = iter([b'{"prompt": "' + b"a" * 30_000, b"a" * 30_000 + b'"}'])  # no Content-Length
    reply = client.post("/generate", content=chunks, headers=JSON)
    assert reply.status_code == 413
    assert client.get("/health").status_code == 200 and server.process.poll() is None


def test_missing_checkpoint_stops_the_start_with_the_fix(tmp_path):
    env = {"COURSE_SERVE_CNN_CHECKPOINT": str(tmp_path / "nope.pt"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "course_serve"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "No MNIST CNN checkpoint" in done.stderr and "COURSE_SERVE_CNN_CHECKPOINT" in done.stderr


def test_make_test_installs_the_deploy_extra_and_packages_the_service():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    deploy = [d for d in extras["deploy"] if not d.startswith("course-helpers[")] + extras["serve"]
    assert set(deploy) <= set(extras["dev"])  # `make install` is pip install -e '.[dev]'
    assert "course-helpers[serve]" in extras["deploy"]  # the service's extra, within deploy's
    assert "course_serve" in pyproject["tool"]["setuptools"]["packages"]
    assert any(p.startswith("course_serve") for p in pyproject["tool"]["ruff"]["include"])
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve: $(SERVE_STAMP)" in makefile and "-e '.[serve]'" in makefile  # light install


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="COURSE_SERVE_MAX_BATCH"):
        Settings.from_env(
            {"COURSE_SERVE_MAX_BATCH": "many"}, cnn_checkpoint="a", gpt_checkpoint="b"
        )
    with pytest.raises(ValueError, match="out of range"):
        Settings.from_env({"COURSE_SERVE_BATCH_WINDOW_MS": "-1"})


# --------------------------------------------------------------------------- generated requests

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),  # fmt: skip
    max_leaves=20,
)
GENERATE_BODIES = st.fixed_dictionaries(
    {"prompt": st.text(max_size=40) | st.text(CHARS, min_size=1, max_size=40)},
    optional={"max_new_tokens": st.integers(-5, 60) | st.integers(), "top_k": st.none()
              | st.integers(-2, 100), "temperature": st.floats(-2, 12) | st.floats(),
              "seed": st.integers(-10, 2**64), "extra": ANY_JSON},
)  # fmt: skip
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@FUZZ
@given(body=GENERATE_BODIES | ANY_JSON)
def test_generated_generate_requests_never_get_a_5xx(client, body):
    reply = client.post("/generate", content=json.dumps(body).encode(), headers=JSON)
    assert reply.status_code in (200, 422), reply.text


PNG_LIKE = st.builds(lambda tail: images.PNG_MAGIC + tail, st.binary(max_size=200))
KINDS = ["image/png", "application/json", "multipart/form-data", "text/plain", ""]
PIXEL_LISTS = st.lists(st.lists(st.floats() | st.integers(-10, 300), max_size=30), max_size=30)


@FUZZ
@given(data=st.binary(max_size=2000) | PNG_LIKE, kind=st.sampled_from(KINDS), pixels=PIXEL_LISTS)
def test_generated_classify_requests_never_get_a_5xx(client, data, kind, pixels):
    replies = [
        client.post("/classify", content=data, headers={"content-type": kind}),
        client.post("/classify", content=json.dumps({"pixels": pixels}), headers=JSON),
    ]
    assert all(r.status_code < 500 for r in replies), [r.text for r in replies]


def test_the_server_survived_everything(client, server):
    assert client.get("/health").json()["status"] == "ready" and server.process.poll() is None


# ------------------------------------------------------------------ batched generation is exact


def test_padded_batches_give_each_request_its_own_tokens():
    gpt = tiny_gpt(seed=1)
    jobs = [GenerateJob((1, 2, 3), 20, 0.0), GenerateJob((5,) * 15, 7, 1.0, 3, seed=4),
            GenerateJob((9, 8), 25, 0.8, None, seed=5)]  # fmt: skip
    gens = [torch.Generator().manual_seed(job.seed) for job in jobs]
    batched = generate_padded(gpt, jobs, gens, "cpu")
    for job, tokens in zip(jobs, batched):
        alone = gpt.generate(torch.tensor([job.ids]), job.max_new_tokens, job.temperature,
                             job.top_k, use_cache=False,
                             generator=torch.Generator().manual_seed(job.seed))  # fmt: skip
        assert tokens == alone[0, len(job.ids) :].tolist()


def test_a_tiny_temperature_is_greedy_not_an_error(client):
    greedy = client.post(
        "/generate", json={"prompt": "ROMEO:", "max_new_tokens": 8, "temperature": 0}
    )
    assert greedy.status_code == 200, greedy.text
    for temperature in (1e-40, 5e-324):
        reply = client.post("/generate", json={"prompt": "ROMEO:", "max_new_tokens": 8,
                                               "temperature": temperature, "seed": 1})  # fmt: skip
        assert reply.status_code == 200 and reply.json()["text"] == greedy.json()["text"], (
            reply.text
        )


def test_one_failing_request_fails_alone_in_its_batch():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from course_serve.batching import MicroBatcher

    def double(items):
        if "bad" in items:
            raise ValueError("bad item")
        return [2 * item for item in items]

    async def main():
        batcher = MicroBatcher(double, ThreadPoolExecutor(1), window_s=0.05, max_batch=16)
        items = [1, 2, 3, 4, "bad", 5, 6, 7, 8]  # 8 good requests and one bad one, together
        results = await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
        await batcher.close()
        return results, batcher.stats()

    results, stats = asyncio.run(main())
    assert results[:4] + results[5:] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert isinstance(results[4], ValueError) and "bad item" in str(results[4])
    assert stats["largest_batch"] == 9  # they were batched, then run alone after the failure
    assert stats["pending"] == 0


def test_a_body_that_is_not_utf8_gets_a_clear_400(client):
    reply = client.post("/generate", content=b'{"prompt": "\xff\xfe"}', headers=JSON)
    assert reply.status_code == 400 and "UTF-8" in reply.json()["detail"], reply.text


def test_a_bug_answers_500_and_closes_the_connection(tmp_path):
    from fastapi.testclient import TestClient

    from course_serve.app import create_app

    cnn_path, gpt_path = save_tiny_models(tmp_path)
    app = create_app(Settings(cnn_checkpoint=cnn_path, gpt_checkpoint=gpt_path))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        reply = test_client.get("/boom")
    assert reply.status_code == 500 and reply.headers["connection"] == "close"
    assert reply.json() == {"detail": "internal error (RuntimeError)"}


# ----------------------------------------------------------------- streaming and metrics


def read_events(lines) -> list[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
    return events


def test_streaming_sends_each_character_then_the_answer(client):
    request = {"prompt": "ROMEO:\n", "max_new_tokens": 20, "temperature": 0.9, "seed": 3}
    plain = client.post("/generate", json=request).json()
    with client.stream("POST", "/generate", json={**request, "stream": True}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = read_events(reply.iter_lines())
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) == 20 and events[-1] == ("done", plain)
    assert "".join(tokens) == plain["text"]


def metric(client, name: str, **labels) -> float:
    """One sample of GET /metrics (0 when it has not been recorded yet)."""
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_requests_batches_and_tokens(client):
    before = metric(client, "course_serve_requests_total", route="/generate", status="200")
    tokens = metric(client, "course_serve_generated_tokens_total")
    client.post("/generate", json={"prompt": "a", "max_new_tokens": 9})
    assert metric(client, "course_serve_requests_total", route="/generate", status="200") == (
        before + 1
    )
    assert metric(client, "course_serve_generated_tokens_total") == tokens + 9
    text = client.get("/metrics").text
    names = ("course_serve_request_seconds_bucket", "course_serve_batch_size_bucket",
             'course_serve_pending{lane="classify"}', "course_serve_rejected_total")  # fmt: skip
    for name in names:
        assert name in text, name


def test_the_python_client_and_its_command_line(server, capsys, tmp_path):
    from course_serve.client import Client, ServiceError, main

    with Client(server.url) as python_client:
        answer = python_client.generate("ROMEO:", max_new_tokens=10, seed=2)
        assert "".join(python_client.stream("ROMEO:", max_new_tokens=10, seed=2)) == answer["text"]
        assert python_client.classify(images.to_png(digit_image()))["digit"] in range(10)
        with pytest.raises(ServiceError, match="unknown characters") as error:
            python_client.generate("€")
        assert error.value.status == 422
    png = tmp_path / "digit.png"
    png.write_bytes(images.to_png(digit_image()))
    assert main(["--url", server.url, "classify", str(png)]) == 0
    assert main(["--url", server.url, "generate", "ROMEO:", "--tokens", "10", "--seed", "2",
                 "--stream"]) == 0  # fmt: skip
    assert answer["text"] in capsys.readouterr().out
    assert main(["--url", server.url, "generate", "€"]) == 1
    assert "422: unknown characters" in capsys.readouterr().err


# ------------------------------------------------- backpressure, deadlines, disconnects, shutdown

SLOW = {"COURSE_SERVE_BATCH_WINDOW_MS": 0, "COURSE_SERVE_MAX_NEW_TOKENS": 200_000,
        "COURSE_SERVE_MAX_PENDING": 2, "COURSE_SERVE_REQUEST_TIMEOUT_S": 4,
        "COURSE_SERVE_THREADS": 1}  # fmt: skip
LONG = {"prompt": "ROMEO:", "max_new_tokens": 200_000}  # minutes of work for the tiny GPT


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A server with room for 2 requests per lane and a 4 s deadline."""
    cnn_path, gpt_path = save_tiny_models(tmp_path_factory.mktemp("slow"))
    env = {"COURSE_SERVE_CNN_CHECKPOINT": cnn_path, "COURSE_SERVE_GPT_CHECKPOINT": gpt_path, **SLOW}
    with ServerProcess(env=env, start_timeout=60) as process:
        yield process


def wait_until(condition, timeout=20.0):
    import time

    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def lane_idle(session, lane="generate"):
    return session.get("/health").json()["batching"][lane]["pending"] == 0


def test_a_request_past_its_deadline_gets_504_and_stops(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as session:
        tokens = metric(session, "course_serve_generated_tokens_total")
        reply = session.post("/generate", json=LONG)
        assert (
            reply.status_code == 504 and "COURSE_SERVE_REQUEST_TIMEOUT_S" in reply.json()["detail"]
        )
        assert (
            metric(session, "course_serve_cancelled_total", lane="generate", reason="deadline") >= 1
        )
        # the generation stopped soon after: its tokens are counted when the lane lets it go
        wait_until(lambda: metric(session, "course_serve_generated_tokens_total") > tokens)
        assert (
            metric(session, "course_serve_generated_tokens_total") - tokens < LONG["max_new_tokens"]
        )
        wait_until(lambda: lane_idle(session))
        assert (
            session.post("/generate", json={"prompt": "a", "max_new_tokens": 3}).status_code == 200
        )


def test_a_full_lane_answers_503_with_retry_after(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as session:
        wait_until(lambda: lane_idle(session))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(httpx.post, slow_server.url + "/generate", json=LONG, timeout=30)
                    for _ in range(2)]  # fmt: skip
            wait_until(
                lambda: session.get("/health").json()["batching"]["generate"]["pending"] == 2
            )
            reply = session.post("/generate", json={"prompt": "a", "max_new_tokens": 3})
            assert reply.status_code == 503 and reply.headers["retry-after"] == "1", reply.text
            ready = session.get("/health/ready")
            assert ready.status_code == 503 and ready.json() == {"status": "overloaded"}
            classify = session.post("/classify", json={"pixels": digit_image().tolist()})
            assert classify.status_code == 200  # its own lane: never behind the generations
            assert [f.result().status_code for f in busy] == [504, 504]
        assert metric(session, "course_serve_rejected_total", lane="generate") >= 1
        wait_until(lambda: lane_idle(session))
        assert session.get("/health/ready").status_code == 200


def leave_early(url: str, stream: bool) -> None:
    """Ask for a long generation and hang up: after 0.5 s of silence, or after one token."""
    if not stream:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/generate", json=LONG, timeout=0.5)
        return
    with httpx.stream(
        "POST", url + "/generate", json={**LONG, "stream": True}, timeout=30
    ) as reply:
        assert next(reply.iter_lines()).startswith("event: token")
    # leaving the block closes the connection in the middle of the stream


def test_a_client_that_disconnects_cancels_its_work(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as session:

        def disconnects():
            return metric(session, "course_serve_cancelled_total", lane="generate",
                          reason="disconnect")  # fmt: skip

        wait_until(lambda: lane_idle(session))
        tokens, before = metric(session, "course_serve_generated_tokens_total"), disconnects()
        for stream in (False, True):
            leave_early(slow_server.url, stream)
            wait_until(lambda s=stream: disconnects() == before + 1 + s, 3.5)
            wait_until(lambda: lane_idle(session), 3.5)  # well before the 4 s deadline
        generated = metric(session, "course_serve_generated_tokens_total") - tokens
        assert 0 < generated < LONG["max_new_tokens"]


def test_classify_is_not_stuck_behind_a_long_generation(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as session:
        wait_until(lambda: lane_idle(session))
        with session.stream("POST", "/generate", json={**LONG, "stream": True}) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("event: token")  # the generation is running
            classify = httpx.post(slow_server.url + "/classify", timeout=30,
                                  json={"pixels": digit_image().tolist()})  # fmt: skip
            assert classify.status_code == 200
            assert session.get("/health").json()["batching"]["generate"]["pending"] == 1


def test_shutdown_lets_requests_in_flight_finish(tmp_path):
    import signal

    cnn_path, gpt_path = save_tiny_models(tmp_path)
    env = {"COURSE_SERVE_CNN_CHECKPOINT": cnn_path, "COURSE_SERVE_GPT_CHECKPOINT": gpt_path, **SLOW,
           "COURSE_SERVE_REQUEST_TIMEOUT_S": 60}  # fmt: skip
    with ServerProcess(env=env, start_timeout=60) as server:
        request = {"prompt": "ROMEO:", "max_new_tokens": 3000, "stream": True}
        with httpx.stream("POST", server.url + "/generate", json=request, timeout=60) as reply:
            lines = reply.iter_lines()
            first = next(lines)
            server.process.send_signal(signal.SIGINT)  # Ctrl-C, or SIGTERM from an orchestrator
            events = read_events([first, *lines])
        assert events[-1][0] == "done" and events[-1][1]["new_tokens"] == 3000
        assert server.process.wait(30) == 0


# ------------------------------------------------------- the schema, tested by schemathesis


def test_every_answer_matches_the_openapi_schema(server):
    """Generated valid and invalid requests (bounded, loopback): no 5xx, every answer in the
    schema (status code, content type, body, headers)."""
    schemathesis = pytest.importorskip("schemathesis")
    rejections = {"negative_data_rejection": {"expected-statuses": [400, 413, 415, 422]}}
    config = schemathesis.config.SchemathesisConfig.from_dict({"checks": rejections})
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    cases = st.one_of(*(schema.as_strategy(mode) for mode in modes))

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def check(case):
        skip = []  # a schema cannot say "a PNG of 28x28 pixels": such schema-valid bytes get 422
        if case.media_type in ("image/png", "multipart/form-data"):
            skip = [schemathesis.checks.positive_data_acceptance]
        case.call_and_validate(base_url=server.url, excluded_checks=skip)

    check()
    assert server.process.poll() is None
