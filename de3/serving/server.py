"""The LitServer around the APIs: malformed requests refused in one line before they reach an
inference process, a limit on the body's size, the device, and a stop that ends every process
the server started."""

import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from typing import Any

import litserve as ls
import torch
from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from de3.predictor import resolve_device
from de3.serving.api import TextTaskAPI

log = logging.getLogger(__name__)

STOP_GRACE_S = 5  # seconds a process left over after LitServe's own shutdown has to end before it is killed


def _expected_bodies(apis: Sequence[TextTaskAPI]) -> dict[str, str]:
    return {
        api.api_path: "{" + ", ".join(f'"{name}": "..."' for name in api.request_model.model_fields) + "}"
        for api in apis
    }


def _one_line_reason(apis: Sequence[TextTaskAPI]) -> Any:
    """The handler of malformed requests: 400 with the first problem and the body expected."""
    expected = _expected_bodies(apis)

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


def _body_errors(apis: Sequence[TextTaskAPI], max_body_bytes: int) -> Any:
    """The handler of HTTP errors: one line for a body over the size limit (413, from LitServe's
    limit, raised while the body is read) and for one that is not UTF-8 (FastAPI's generic
    "error parsing the body"); every other error as FastAPI answers it."""
    expected = _expected_bodies(apis)

    async def handler(request: Request, error: HTTPException) -> Any:
        if error.status_code == 413:
            reason = f"body is larger than {max_body_bytes} bytes"
        elif isinstance(error.__cause__, UnicodeDecodeError):
            reason = "body is not valid UTF-8"
        else:
            return await http_exception_handler(request, error)
        hint = f"; expected JSON {expected[request.url.path]}" if request.url.path in expected else ""
        return JSONResponse({"detail": reason + hint}, status_code=error.status_code)

    return handler


def build_server(
    *apis: TextTaskAPI,
    workers: int = 1,
    timeout: float = 30,
    device: str | torch.device = "cpu",
    max_body_bytes: int = 1_000_000,
    fast_queue: bool = False,
) -> ls.LitServer:
    """A LitServer for `apis` (each at its own `api_path`) with `workers` inference processes
    per API on `device` (`auto`: CUDA when present; `cuda:1`: that GPU); malformed requests get
    400 and bodies over `max_body_bytes` 413, with a one-line reason. `fast_queue`: answers go
    back to the HTTP process over ZeroMQ instead of a multiprocessing queue."""
    resolved = resolve_device(device)
    placement: dict[str, Any] = {"accelerator": "cpu"}
    if resolved.type == "cuda":
        placement = {"accelerator": "cuda", "devices": [resolved.index or 0]}
    server = ls.LitServer(
        list(apis),
        workers_per_device=workers,
        timeout=timeout,
        max_payload_size=max_body_bytes,
        fast_queue=fast_queue,
        **placement,
    )
    server.app.add_exception_handler(RequestValidationError, _one_line_reason(apis))
    server.app.add_exception_handler(HTTPException, _body_errors(apis, max_body_bytes))
    return server


def run_until_stopped(server: ls.LitServer, host: str, port: int, **run_options: Any) -> None:
    """Serve until SIGTERM or SIGINT, then end every process the server started. LitServe shuts
    its processes down on KeyboardInterrupt only (SIGTERM would end this process alone and leave
    its HTTP and inference processes holding the port), so SIGTERM raises it here too; a process
    still running after that (the signal came while the server was starting) is ended here."""
    previous = signal.signal(signal.SIGTERM, _interrupt_in(os.getpid()))
    try:
        server.run(host=host, port=port, generate_client_file=False, **run_options)
    except KeyboardInterrupt:
        log.info("stopped while starting")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _end_processes(multiprocessing.active_children())


def _interrupt_in(pid: int) -> Any:
    """A SIGTERM handler raising KeyboardInterrupt in process `pid` only. The HTTP processes are
    forked from it and inherit the handler: they end as SIGTERM ends a process by default (uvicorn
    raises the signal again once it has shut down)."""

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    return handler


def _end_processes(processes: Sequence[multiprocessing.Process]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_GRACE_S)
        if process.is_alive():
            log.warning("process %s (pid %d) did not end on SIGTERM; killing it", process.name, process.pid)
            process.kill()
            process.join()
