"""`mode=serve`: a tiny trained run served by `run.py` on a free loopback port and called over
HTTP (answers equal `mode=predict`'s, bad requests refused in one line while the server keeps
serving); dynamic batching and the single-text request shape checked in process."""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from de3.jobs import predict, train
from de3.predictor import EarlyExitPredictor
from de3.serving import build_server, early_exit_api
from tests.conftest import REPO, compose_config
from tests.test_predictor import make_module, tiny_backbone

PAIRS = [
    ("A man sleeps.", "Someone rests."),
    ("It rains.", "The street is wet."),
    ("word " * 300, "far over max_seq_length: truncated, not refused"),
    ("Cats purr.", "Dogs bark loudly at night."),
    ("x", "y"),
    ("The sky is blue today.", "It is sunny."),
    ("He left early.", "He stayed."),
    ("Numbers: 1 2 3", "Letters a b c"),
]
RUN = ["task=rte", "backbone=tiny_bert", "backbone.config_overrides.num_hidden_layers=3", "debug=fast"]
EXIT = ["exit.rule=entropy", "exit.target_speedup=2"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, glue_dir) -> Path:
    """A tiny 3-layer RTE run (checkpoint + thresholds.json)."""
    folder = tmp_path_factory.mktemp("run")
    train(compose_config([*RUN, f"data.data_dir={glue_dir}", "callbacks.progress_bar=null"], folder))
    return Path(json.loads((folder / "results.json").read_text())["checkpoint"])


@pytest.fixture(scope="module")
def server_url(trained_run, tmp_path_factory):
    """`python run.py mode=serve` on a free loopback port; the whole process group is ended after."""
    port, logs = free_port(), tmp_path_factory.mktemp("serve")
    run_dir = trained_run.parent.parent  # the run folder: its thresholds.json names this checkpoint
    command = [sys.executable, str(REPO / "run.py"), "mode=serve", f"run_dir={run_dir}", *EXIT]
    command += [f"serve.port={port}", "serve.max_batch_size=8", "serve.batch_timeout=0.2", f"paths.log_dir={logs}"]
    with open(logs / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (logs / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /health in 120 s"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # the workers LitServe started, if any are left
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_served_answers_equal_mode_predict(server_url, trained_run, tmp_path, glue_dir):
    bodies = [json.dumps({"text": a, "text_pair": b}).encode() for a, b in PAIRS]
    with ThreadPoolExecutor(len(bodies)) as pool:  # sent together, so the server batches them
        served = list(pool.map(lambda body: post(server_url, body), bodies))
    assert all(status == 200 for status, _ in served), served

    inputs = tmp_path / "pairs.txt"
    inputs.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8")
    overrides = [*RUN, "mode=predict", f"run_dir={trained_run.parent.parent}", *EXIT, f"predict.input={inputs}"]
    predict(compose_config(overrides, tmp_path))
    with open(tmp_path / "predictions.csv", newline="") as file:
        expected = list(csv.DictReader(file))
    for (_, answer), row in zip(served, expected, strict=True):
        assert answer["label"] == row["prediction"] and answer["exit_layer"] == int(row["exit_layer"])
        assert f"{answer['probability']:.4f}" == row["probability"]
        assert answer["speedup"] == pytest.approx(3 / answer["exit_layer"])
    assert len({answer["exit_layer"] for _, answer in served}) > 1  # samples left at different layers


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "body is not JSON"),
        (b'{"text_pair": "b"}', "text: Field required"),
        (b'{"text": 3, "text_pair": "b"}', "text: Input should be a valid string"),
        (b'{"text": "a"}', "text_pair: Field required"),
        (b'{"text": " ", "text_pair": "b"}', "text: Value error, must not be empty"),
        (b'["a", "b"]', "body: Input should be a valid dictionary"),
    ],
)
def test_bad_request_gets_400_and_the_server_keeps_serving(server_url, body, reason):
    good = json.dumps({"text": "It rains.", "text_pair": "The street is wet."}).encode()
    with ThreadPoolExecutor(2) as pool:  # the bad request arrives beside a good one
        (status, answer), (good_status, good_answer) = pool.map(lambda b: post(server_url, b), [body, good])
    assert status == 400 and answer["detail"].startswith(reason), answer
    assert "\n" not in answer["detail"] and '"text_pair"' in answer["detail"]
    assert good_status == 200 and good_answer["exit_layer"] in (1, 2, 3)


def test_a_batch_of_requests_is_one_early_exit_pass(trained_run):
    predictor = EarlyExitPredictor.from_checkpoint(trained_run, "entropy", target_speedup=2.0, batch_size=2)
    api = early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0)
    assert predictor.batch_size == 8  # 8 requests that arrive together run as one batch
    batched = api.predict(PAIRS)
    for answer, pair in zip(batched, PAIRS, strict=True):
        alone = api.answer([pair])[0]
        assert answer == {**alone, "probability": pytest.approx(alone["probability"], abs=1e-5)}
    assert len({answer["exit_layer"] for answer in batched}) > 1


def test_single_text_task_refuses_a_pair():
    module = make_module("sst2", tiny_backbone(layers=2))
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", 0.5)
    client = TestClient(build_server(early_exit_api(predictor, max_batch_size=4, batch_timeout=0.01)).app)
    response = client.post("/predict", json={"text": "a", "text_pair": "b"})
    assert response.status_code == 400
    assert response.json()["detail"] == 'text_pair: Extra inputs are not permitted; expected JSON {"text": "..."}'
    response = client.post("/predict", data={"text": "a"})  # a form, as `curl -d` sends without a Content-Type
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Content-Type is 'application/x-www-form-urlencoded', not")


def test_regression_task_answers_the_value():
    module = make_module("stsb", tiny_backbone(layers=2))
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "patience", 2.0, {"delta": 0.1})
    api = early_exit_api(predictor, max_batch_size=4, batch_timeout=0.01)
    [answer] = api.predict([("A man sleeps.", "Someone rests.")])
    expected = predictor.predict([("A man sleeps.", "Someone rests.")])
    assert answer == {
        "value": pytest.approx(float(expected.prediction[0])),
        "exit_layer": int(expected.exit_layer[0]),
        "speedup": 2 / int(expected.exit_layer[0]),
    }
