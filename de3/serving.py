"""Real early exit behind HTTP, on LitServe: `POST /predict` with `{"text": ...}` (and
`"text_pair"` for pair tasks). Requests that arrive together (LitServe's dynamic batching:
`max_batch_size`, `batch_timeout`) share one `EarlyExitPredictor` batch, and each leaves it at
its own layer. Bad requests are refused in the HTTP process, one line each, before they can
reach a batch, so one bad request never fails the good ones batched with it."""

from collections.abc import Sequence
from typing import Annotated, Any

import litserve as ls
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr

from de3.errors import De3Error
from de3.predictor import EarlyExitPredictor


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


Text = Annotated[StrictStr, AfterValidator(_not_blank)]


class TextRequest(BaseModel):
    """The body of a request to a single-text task."""

    model_config = ConfigDict(extra="forbid")
    text: Text


class TextPairRequest(TextRequest):
    """The body of a request to a pair task (two texts)."""

    text_pair: Text


class EarlyExitAPI(ls.LitAPI):
    """LitServe API of a single-text task around an `EarlyExitPredictor` (CPU). Answers
    `{"label", "probability", "exit_layer", "speedup"}`; regression tasks answer
    `{"value", "exit_layer", "speedup"}` (speedup = layers / exit layer)."""

    request_model: type[TextRequest] = TextRequest

    def __init__(
        self,
        predictor: EarlyExitPredictor,
        max_batch_size: int = 8,
        batch_timeout: float = 0.01,
        api_path: str = "/predict",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.predictor = predictor
        # one server batch must be one predictor batch, so the samples in it exit together
        predictor.batch_size = max(predictor.batch_size, max_batch_size)

    def decode_request(self, request: TextRequest) -> tuple[str, ...]:
        return (request.text,)

    def predict(self, x: Any) -> Any:
        batched = self.max_batch_size > 1
        answers = self.answer(x if batched else [x])
        return answers if batched else answers[0]

    def answer(self, texts: Sequence[tuple[str, ...]]) -> list[dict[str, Any]]:
        """One answer per input (a tuple of the task's texts), all in one early-exit batch."""
        task, num_layers = self.predictor.task, self.predictor.model.num_layers
        out = self.predictor.predict(texts)
        answers = []
        for i, layer in enumerate(out.exit_layer.tolist()):
            if task.is_regression:
                answer = {"value": float(out.prediction[i])}
            else:
                answer = {"label": task.label_names[int(out.prediction[i])], "probability": float(out.probability[i])}
            answers.append({**answer, "exit_layer": layer, "speedup": num_layers / layer})
        return answers

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


class EarlyExitPairAPI(EarlyExitAPI):
    """`EarlyExitAPI` of a pair task: requests carry `text` and `text_pair`."""

    request_model = TextPairRequest

    def decode_request(self, request: TextPairRequest) -> tuple[str, ...]:
        return (request.text, request.text_pair)


def early_exit_api(predictor: EarlyExitPredictor, max_batch_size: int, batch_timeout: float) -> EarlyExitAPI:
    """The API for the predictor's task: one text or a pair."""
    texts = len(predictor.task.local.text_columns)
    if texts not in (1, 2):
        raise De3Error(f"serving takes tasks of one or two texts; task {predictor.task.name!r} has {texts}")
    api = EarlyExitAPI if texts == 1 else EarlyExitPairAPI
    return api(predictor, max_batch_size=max_batch_size, batch_timeout=batch_timeout)


def _one_line_reason(apis: Sequence[EarlyExitAPI]) -> Any:
    """The handler of malformed requests: 400 with the first problem and the body expected."""
    expected = {
        api.api_path: "{" + ", ".join(f'"{name}": "..."' for name in api.request_model.model_fields) + "}"
        for api in apis
    }

    async def handler(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part != "body")
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type:
            reason = f"Content-Type is {content_type!r}, not application/json"
        elif first["type"] == "json_invalid":
            reason = "body is not JSON"
        else:
            reason = f"{field or 'body'}: {first['msg']}"
        hint = f"; expected JSON {expected[request.url.path]}" if request.url.path in expected else ""
        return JSONResponse({"detail": reason + hint}, status_code=400)

    return handler


def build_server(*apis: EarlyExitAPI, workers: int = 1, timeout: float = 30) -> ls.LitServer:
    """A LitServer for `apis` (each at its own `api_path`) on CPU with `workers` inference
    processes per API; malformed requests get 400 with a one-line reason."""
    server = ls.LitServer(list(apis), accelerator="cpu", workers_per_device=workers, timeout=timeout)
    server.app.add_exception_handler(RequestValidationError, _one_line_reason(apis))
    return server
