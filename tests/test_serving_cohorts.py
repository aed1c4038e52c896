"""Layer-by-layer continuous batching (`CohortLoop`), driven in process: LitServe's request queue
and transport stand-ins, a tiny random model, and a threshold at which some samples leave at
layer 1 and the others later."""

import copy
import queue
import time

import pytest
import torch
from litserve.loops.base import _SENTINEL_VALUE
from litserve.utils import LitAPIStatus

from de3.predictor import EarlyExitPredictor
from de3.serving import TextPairRequest, TextRequest, early_exit_api
from tests.test_predictor import make_module, tiny_backbone

TEXTS = ["a fine film", "dull and long", "x", "The sky is blue today.", "It rains.", "what a mess", "great", "1 2 3"]


class Transport:
    """LitServe's transport to the HTTP process: records (uid, status, response) as sent."""

    def __init__(self, events: list) -> None:
        self.events = events

    def send(self, item, consumer_id: int) -> None:
        uid, (response, status, _, _) = item
        self.events.append(("answer", uid, status, response))


@pytest.fixture
def restore_torch_threads():
    """`setup` sets one torch thread, as in a server's inference process; not in the test process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def module():
    return make_module("sst2", tiny_backbone(layers=4))


def layer_one_entropy(module) -> dict[str, float]:
    """Each text's entropy indicator at the first exit, alone."""
    values = {}
    for text in TEXTS:
        batch = module.tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = module.model.backbone(batch["input_ids"], batch["attention_mask"])[0]
            logits = module.model.exit_logits(0, module.model.backbone.exit_view(hidden), batch["attention_mask"])[0]
        p = logits.softmax(-1)
        values[text] = float(-(p * p.log()).sum() / torch.log(torch.tensor(2.0)))
    return values


@pytest.fixture(scope="module")
def predictor(module) -> EarlyExitPredictor:
    """Entropy halfway between the texts' two middle layer-1 indicators: half of them leave at layer 1."""
    values = sorted(layer_one_entropy(module).values())
    threshold = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", threshold)
    layers = predictor.predict(TEXTS).exit_layer.tolist()
    assert 1 in layers and max(layers) > 1, layers  # what these tests need of the threshold
    return predictor


def serve(api, arrivals, events, queued_at=None, device="cpu"):
    """Run the API's loop over `arrivals` ((uid, body) put on its queue before it starts) to
    LitServe's stop sentinel; `events` gets the loop's `start` and `advance` calls and answers."""
    requests = queue.Queue()
    for uid, body in arrivals:
        requests.put((0, uid, queued_at or time.monotonic(), body))
    requests.put(_SENTINEL_VALUE)
    start, advance = api.start, api.advance
    api.start = lambda features: events.append(("start", len(features))) or start(features)
    api.advance = lambda batch: events.append(("advance", id(batch))) or advance(batch)
    api.request_timeout = 30
    api.setup(device)
    api.loop(api, device, 0, requests, Transport(events), {}, None)
    return {uid: (status, response) for kind, uid, status, response in (e for e in events if e[0] == "answer")}


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
)
def test_each_request_is_answered_when_its_sample_exits(predictor, restore_torch_threads, device):
    # a copy, as each inference process unpickles its own: setup moves its model to the device
    api = early_exit_api(copy.deepcopy(predictor), max_batch_size=8, batch_timeout=0.0)
    events = []
    answers = serve(api, [(text, TextRequest(text=text)) for text in TEXTS], events, device=device)
    assert api.predictor.device.type == device  # the inference process moved the model to its device

    alone = predictor.predict(TEXTS)
    for i, text in enumerate(TEXTS):
        status, answer = answers[text]
        assert status == LitAPIStatus.OK and answer["exit_layer"] == int(alone.exit_layer[i])
        assert answer["label"] == predictor.task.label_names[int(alone.prediction[i])]
        assert answer["probability"] == pytest.approx(float(alone.probability[i]), abs=1e-5)
        assert answer["speedup"] == 4 / answer["exit_layer"] and answer["latency_ms"] > 0
    # one cohort; the samples leaving at layer 1 are answered before layer 2 runs
    assert [e for e in events if e[0] == "start"] == [("start", 8)]
    second_layer = [i for i, e in enumerate(events) if e[0] == "advance"][1]
    answered_first = {e[1] for e in events[:second_layer] if e[0] == "answer"}
    assert answered_first == {text for i, text in enumerate(TEXTS) if alone.exit_layer[i] == 1}


def test_a_slot_freed_by_an_exit_takes_the_next_request(predictor, module, restore_torch_threads):
    entropy = layer_one_entropy(module)
    early = min(TEXTS, key=entropy.get)  # leaves at layer 1
    late = max(TEXTS, key=entropy.get)  # runs on
    api = early_exit_api(predictor, max_batch_size=2, batch_timeout=0.0)
    events = []
    arrivals = [("late", TextRequest(text=late)), ("early", TextRequest(text=early)), ("next", TextRequest(text="x"))]
    answers = serve(api, arrivals, events)

    assert all(status == LitAPIStatus.OK for status, _ in answers.values())
    assert answers["early"][1]["exit_layer"] == 1 and answers["late"][1]["exit_layer"] > 1
    starts = [i for i, e in enumerate(events) if e[0] == "start"]
    assert [events[i] for i in starts] == [("start", 2), ("start", 1)]  # two running at most
    answered = {e[1]: i for i, e in enumerate(events) if e[0] == "answer"}
    # "next" starts once "early" has left, while "late" still runs
    assert answered["early"] < starts[1] < answered["late"]


def test_a_request_the_worker_cannot_read_is_refused_alone(predictor, restore_torch_threads):
    api = early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0)
    # visible only past the characters kept: the HTTP process lets it through, the worker cuts it
    blank_where_kept = TextRequest.model_construct(text=" " * api.max_chars + "late text")
    arrivals = [("good", TextRequest(text="great")), ("blank", blank_where_kept), ("also good", TextRequest(text="x"))]
    answers = serve(api, arrivals, [])

    status, error = answers["blank"]
    assert status == LitAPIStatus.ERROR and error.status_code == 400
    assert error.detail.startswith(f"must not be empty: no visible character in its first {api.max_chars}")
    assert answers["good"][0] == answers["also good"][0] == LitAPIStatus.OK


def test_a_long_text_is_cut_before_it_is_tokenized(predictor, restore_torch_threads):
    api = early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0)
    long_text = "word " * 200_000  # a million characters
    calls = []
    tokenize = predictor.tokenize
    predictor.tokenize = lambda texts: calls.append(texts) or tokenize(texts)
    try:
        answers = serve(api, [("long", TextRequest(text=long_text))], [])
    finally:
        del predictor.tokenize
    assert answers["long"][0] == LitAPIStatus.OK
    assert calls == [[(long_text[: api.max_chars],)]]  # one tokenization, of the characters kept
    assert api.max_chars == 32 * predictor.max_seq_length


def test_a_request_that_waited_past_the_timeout_gets_504(predictor, restore_torch_threads):
    api = early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0)
    answers = serve(api, [("old", TextRequest(text="great"))], [], queued_at=time.monotonic() - 60)
    status, error = answers["old"]
    assert status == LitAPIStatus.ERROR and error.status_code == 504


def test_setup_gives_the_worker_one_torch_thread_on_the_cpu(predictor, restore_torch_threads):
    torch.set_num_threads(2)
    early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0).setup("cpu")
    assert torch.get_num_threads() == 1
    early_exit_api(predictor, max_batch_size=8, batch_timeout=0.0, threads=2).setup("cpu")
    assert torch.get_num_threads() == 2


def test_regression_task_answers_the_value(restore_torch_threads):
    module = make_module("stsb", tiny_backbone(layers=2))
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "patience", 2.0, {"delta": 0.1})
    api = early_exit_api(predictor, max_batch_size=4, batch_timeout=0.0)
    pair = ("A man sleeps.", "Someone rests.")
    status, answer = serve(api, [("pair", TextPairRequest(text=pair[0], text_pair=pair[1]))], [])["pair"]
    expected = predictor.predict([pair])
    assert status == LitAPIStatus.OK and answer.pop("latency_ms") > 0
    assert answer == {
        "value": pytest.approx(float(expected.prediction[0])),
        "exit_layer": int(expected.exit_layer[0]),
        "speedup": 2 / int(expected.exit_layer[0]),
    }
