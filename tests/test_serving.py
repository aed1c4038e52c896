"""`mode=serve`: a tiny trained run served by `run.py` on a free loopback port and called over
HTTP (answers equal `mode=predict`'s, bad requests refused in one line while the server keeps
serving, SIGTERM ends every process it started); the single-text request shape and the
body's limits checked in process."""

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
def server(trained_run, tmp_path_factory):
    """`python run.py mode=serve` on a free loopback port, answering /health: (process, port, log
    folder). The last test stops it; its whole process group is killed after, whatever is left."""
    port, logs = free_port(), tmp_path_factory.mktemp("serve")
    run_dir = trained_run.parent.parent  # the run folder: its thresholds.json names this checkpoint
    command = [sys.executable, str(REPO / "run.py"), "mode=serve", f"run_dir={run_dir}", *EXIT]
    command += [f"serve.port={port}", "serve.max_batch_size=8", "serve.batch_timeout=0.2", f"paths.log_dir={logs}"]
    with open(logs / "server.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (logs / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /health in 120 s"
            time.sleep(0.2)
        yield process, port, logs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def server_url(server):
    process, port, logs = server
    assert process.poll() is None, (logs / "server.log").read_text()
    return f"http://127.0.0.1:{port}/predict"


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
        assert 0 < answer["latency_ms"] < 60_000
    assert len({answer["exit_layer"] for _, answer in served}) > 1  # samples left at different layers


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "body is not JSON"),
        (b'{"text_pair": "b"}', "text: Field required"),
        (b'{"text": 3, "text_pair": "b"}', "text: Input should be a valid string"),
        (b'{"text": "a"}', "text_pair: Field required"),
        (b'{"text": " ", "text_pair": "b"}', "text: Value error, must not be empty"),
        (b'{"text": "\\u200b", "text_pair": "b"}', "text: Value error, must not be empty"),
        (b'{"text": "a", "text_pair": "\\u0000"}', "text_pair: Value error, must not be empty"),
        (b'{"text": "\\ud800 lone surrogate", "text_pair": "b"}', "text: Value error, not valid Unicode"),
        (b'{"text": "\xff", "text_pair": "b"}', "body is not valid UTF-8"),
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


def descendants(pid: int) -> set[int]:
    """The processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_body_over_the_limit_gets_413_before_it_is_parsed():
    module = make_module("sst2", tiny_backbone(layers=2))
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", 0.5)
    api = early_exit_api(predictor, max_batch_size=4, batch_timeout=0.01)
    client = TestClient(build_server(api, max_body_bytes=1000).app)
    response = client.post("/predict", content=b'{"text": "' + b"a" * 2000 + b'"}')
    assert response.status_code == 413
    assert response.json()["detail"] == 'body is larger than 1000 bytes; expected JSON {"text": "..."}'


def test_sigterm_to_the_server_ends_every_process_it_started(server):
    """Last in this file: it stops the module's server (one server start less for the suite)."""
    process, port, logs = server
    started = descendants(process.pid)
    assert len(started) >= 3, started  # LitServe's HTTP, inference and queue-manager processes
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(map(running, started)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if running(pid)], (logs / "server.log").read_text()
    with socket.socket() as sock:  # a new server can listen on the port (as uvicorn binds it)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
