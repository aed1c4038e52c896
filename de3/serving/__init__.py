"""Real early exit behind HTTP, on LitServe: `POST /predict` with `{"text": ...}` (and
`"text_pair"` for pair tasks). Each request is answered as soon as its sample exits (layer-by-layer
continuous batching, `de3.serving.cohorts`). Bad requests are refused in the HTTP process, one
line each, before they can reach the model; one that gets past (a text blank within the
characters kept) is refused alone in the inference process, so a bad request never fails the
good ones served beside it."""

from de3.serving.api import EarlyExitAPI, EarlyExitPairAPI, TextPairRequest, TextRequest, TextTaskAPI, early_exit_api
from de3.serving.cohorts import CohortLoop
from de3.serving.server import build_server, run_until_stopped

__all__ = [
    "CohortLoop",
    "EarlyExitAPI",
    "EarlyExitPairAPI",
    "TextPairRequest",
    "TextRequest",
    "TextTaskAPI",
    "build_server",
    "early_exit_api",
    "run_until_stopped",
]
