"""The LitServe APIs: request bodies checked in the HTTP process, and the early-exit predictor
answering in the inference process, one layer at a time (see `de3.serving.cohorts`)."""

from collections.abc import Sequence
from typing import Annotated, Any

import litserve as ls
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr

from de3.errors import De3Error
from de3.predictor import EarlyExitPredictor, LayerwiseBatch
from de3.serving.cohorts import CohortLoop
from de3.text_input import check_text, max_chars_for


def _valid_text(text: str) -> str:
    # Kept whole here: the inference process cuts it to the predictor's max_chars before tokenizing.
    return check_text(text, None)


Text = Annotated[StrictStr, AfterValidator(_valid_text)]


class TextRequest(BaseModel):
    """The body of a request to a single-text task."""

    model_config = ConfigDict(extra="forbid")
    text: Text


class TextPairRequest(TextRequest):
    """The body of a request to a pair task (two texts)."""

    text_pair: Text


class TextTaskAPI(ls.LitAPI):
    """What every API of a single-text task shares: its request body, the predictor (its
    tokenizer, task and, for early exit, its model), and the inference process's setup."""

    request_model: type[TextRequest] = TextRequest

    def __init__(
        self,
        predictor: EarlyExitPredictor,
        max_batch_size: int = 8,
        batch_timeout: float = 0.01,
        api_path: str = "/predict",
        threads: int | None = None,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path, loop=self.make_loop()
        )
        self.predictor = predictor
        self.threads = threads
        self.max_chars = max_chars_for(predictor.max_seq_length)

    def make_loop(self) -> Any:
        """The LitServe loop that runs this API: LitServe's own choice here."""
        return "auto"

    def setup(self, device: str) -> None:
        """In the inference process: `threads` torch threads (None: one on the CPU, where each
        worker is one process and more threads only fight over the cores; torch's default on a
        GPU) and the predictor's model on `device`."""
        threads = self.threads or (1 if torch.device(device).type == "cpu" else None)
        if threads is not None:
            torch.set_num_threads(threads)
        if torch.device(device) != self.predictor.device:
            self.predictor = _on_device(self.predictor, device)

    def decode_request(self, request: TextRequest) -> tuple[str, ...]:
        return (request.text,)

    def features(self, texts: tuple[str, ...]) -> dict[str, Any]:
        """One request's texts, each cut to `max_chars` characters, tokenized; ValueError (or
        De3Error) with a one-line reason when they cannot be read."""
        return self.predictor.tokenize([tuple(check_text(text, self.max_chars) for text in texts)])[0]

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


class EarlyExitAPI(TextTaskAPI):
    """LitServe API of a single-text task around an `EarlyExitPredictor`, served by a
    `CohortLoop`: each request is answered as soon as its sample exits, with `{"label",
    "probability", "exit_layer", "speedup", "latency_ms"}` (regression: `"value"` instead of label
    and probability; speedup = layers / exit layer; latency_ms: from when the HTTP process queued
    the request for the inference process to when that process answered it)."""

    def make_loop(self) -> CohortLoop:
        """Layer-by-layer continuous batching through `start` and `advance`."""
        return CohortLoop()

    def start(self, features: Sequence[dict[str, Any]]) -> LayerwiseBatch:
        """Requests that arrived together (their `features`), embedded as one batch."""
        batch = self.predictor.collate(list(features))
        return self.predictor.start(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def advance(self, batch: LayerwiseBatch) -> list[tuple[int, dict[str, Any]]]:
        """Run `batch`'s next layer; (position in the batch, answer) of each sample that exits."""
        exited = self.predictor.advance(batch)
        positions = exited.positions.tolist()
        if not positions:
            return []
        task, layer = self.predictor.task, exited.exit_layer
        common = {"exit_layer": layer, "speedup": self.predictor.model.num_layers / layer}
        if task.is_regression:
            answers = [{"value": value} for value in exited.prediction.float().tolist()]
        else:
            labels, probabilities = exited.prediction.tolist(), exited.probability.tolist()
            answers = [
                {"label": task.label_names[label], "probability": probability}
                for label, probability in zip(labels, probabilities)
            ]
        return [(position, {**answer, **common}) for position, answer in zip(positions, answers)]


class EarlyExitPairAPI(EarlyExitAPI):
    """`EarlyExitAPI` of a pair task: requests carry `text` and `text_pair`."""

    request_model = TextPairRequest

    def decode_request(self, request: TextPairRequest) -> tuple[str, ...]:
        return (request.text, request.text_pair)


def early_exit_api(
    predictor: EarlyExitPredictor, max_batch_size: int, batch_timeout: float, threads: int | None = None
) -> EarlyExitAPI:
    """The API for the predictor's task: one text or a pair."""
    texts = len(predictor.task.local.text_columns)
    if texts not in (1, 2):
        raise De3Error(f"serving takes tasks of one or two texts; task {predictor.task.name!r} has {texts}")
    api = EarlyExitAPI if texts == 1 else EarlyExitPairAPI
    return api(predictor, max_batch_size=max_batch_size, batch_timeout=batch_timeout, threads=threads)


def _on_device(predictor: EarlyExitPredictor, device: str) -> EarlyExitPredictor:
    """The same predictor with its model on `device` (the server builds it on the CPU; each
    inference process moves it to the device LitServe gives that process)."""
    return EarlyExitPredictor(
        predictor.model,
        predictor.tokenizer,
        predictor.task,
        predictor.rule.name,
        predictor.threshold,
        predictor.params,
        max_seq_length=predictor.max_seq_length,
        batch_size=predictor.batch_size,
        device=device,
        precision=predictor.precision,
    )
