"""Early exit under load, served as users serve it: `mode=serve` servers against a Hugging Face anchor.

python -m benchmarks.serving RUN_DIR --output benchmarks/serving.md

RUN_DIR is a trained run's output folder (e.g. from `python run.py experiment=quickstart`): its
`thresholds.json` names the checkpoint and each rule's recorded parameters. One server per
variant and `--max-batch-size`, each its own `python run.py mode=serve` (or, for the anchor, this
script) process group on 127.0.0.1 with the same other `serve.*` settings:
- `anchor`: `AutoModelForSequenceClassification` with the run's encoder weights at full depth
  (its head is untrained: it measures speed only), behind the same request checks and one
  torch thread per worker, batched as LitServe batches (dynamic batching, `--max-batch-size`
  requests within `--batch-timeout`);
- `full`: `mode=serve` at a threshold no sample reaches (every layer, every exit head; `--no-full`
  leaves it out);
- one per `--targets` speed-up: `mode=serve exit.target_speedup=T` (the run's threshold for T).
All servers start once; a server not being measured is stopped (SIGSTOP on its process group),
so it takes no CPU from the one that is. Each of `--rounds` rounds resumes every server in turn
(the order rotates by round), warms it up for `--warmup` seconds, and measures each
`--concurrency` for `--seconds`: that many client threads, each on its own keep-alive
connection, each sending its next request when the last is answered (dev split texts, in turn).
Throughput is per round (median and min–max over rounds), as is its ratio to the anchor's in
the same round; latency percentiles pool the rounds; the layer ratio is L·N / Σ exit layer over
the answers the cell received. With several `--max-batch-size` values, a second table compares
each server at its best one with the anchor at its own best (per round, same transport): layer-by-
layer batching spreads the running samples over the layers, so it may want more of them at once.
Progress goes to stderr, one line per cell and round.
"""

import argparse
import contextlib
import copy
import datetime
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from benchmarks.per_exit_table import machine
from de3.data.sources import load_split
from de3.errors import De3Error
from de3.flops import layer_speedup
from de3.predictor import EarlyExitPredictor
from de3.serving import TextTaskAPI, build_server, run_until_stopped
from de3.thresholds import never_exits

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.9  # issue 31: throughput over the anchor ≥ 0.9 × the layer ratio reached


class AnchorAPI(TextTaskAPI):
    """The same API answered by a plain full-depth Hugging Face classifier, in LitServe's own
    dynamic batches."""

    def setup(self, device: str) -> None:
        super().setup(device)
        encoder = self.predictor.model.backbone.encoder
        config = copy.deepcopy(encoder.config)
        config.num_labels = self.predictor.task.num_outputs
        self.classifier = AutoModelForSequenceClassification.from_config(config).eval()
        getattr(self.classifier, self.classifier.base_model_prefix).load_state_dict(encoder.state_dict(), strict=False)
        self.classifier.to(self.predictor.device)

    @torch.inference_mode()
    def predict(self, inputs: Any) -> Any:
        batched = self.max_batch_size > 1  # LitServe hands a list of requests only when it batches
        batch = self.predictor.collate([self.features(texts) for texts in (inputs if batched else [inputs])])
        probabilities = self.classifier(**batch.to(self.predictor.device)).logits.softmax(-1).tolist()
        layers, labels = self.predictor.model.num_layers, self.predictor.task.label_names
        answers = [
            {"label": labels[max(range(len(p)), key=p.__getitem__)], "probability": max(p), "exit_layer": layers}
            for p in probabilities
        ]
        return answers if batched else answers[0]


@dataclass(frozen=True)
class ServerSpec:
    """What a server serves: the `variant` ("anchor", "full", or a target such as "2x"), over
    LitServe's ZeroMQ answers or not (`fast_queue`), with `max_batch_size`."""

    variant: str
    fast_queue: bool
    max_batch_size: int

    @property
    def anchor(self) -> "ServerSpec":
        """The anchor this server is compared with: the same transport and batch size."""
        return replace(self, variant="anchor")

    @property
    def name(self) -> str:
        return f"{self.variant}{'+fast_queue' if self.fast_queue else ''}@{self.max_batch_size}"

    def label(self, rule: str) -> str:
        """The server as the tables name it."""
        names = {"anchor": "`AutoModelForSequenceClassification` (anchor)", "full": "early exit, no exit (full depth)"}
        return names.get(self.variant, f"early exit at {self.variant} ({rule})") + (
            ", fast_queue" if self.fast_queue else ""
        )


@dataclass
class Server:
    """One server: what it serves, its process (the leader of its process group) and port."""

    spec: ServerSpec
    process: subprocess.Popen
    port: int
    log: Path

    def pause(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)


@dataclass
class Cell:
    """What one variant at one concurrency measured, over the rounds."""

    rates: list[float] = field(default_factory=list)  # requests/s, one per round
    latencies: list[float] = field(default_factory=list)  # client-side seconds, every request
    server_ms: list[float] = field(default_factory=list)  # the answers' latency_ms (early exit only)
    exit_layers: list[int] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_commands(args: argparse.Namespace, num_layers: int) -> dict[ServerSpec, list[str]]:
    """The command of each server (its port is appended): every variant at every max batch size,
    over either transport or both (`--fast-queue`)."""
    transports = {"off": [False], "on": [True], "both": [False, True]}[args.fast_queue]
    mode_serve = [
        sys.executable,
        str(REPO / "run.py"),
        "mode=serve",
        f"run_dir={args.run_dir}",
        f"exit.rule={args.rule}",
    ]
    variants = {"full": [f"exit.threshold={never_exits(args.rule, num_layers)}"]} if args.full else {}
    variants |= {f"{target:g}x": [f"exit.target_speedup={target}"] for target in args.targets}
    serve_anchor_command = [sys.executable, "-m", "benchmarks.serving", str(args.run_dir), "--serve-anchor"]
    serve_anchor_command.append(f"--rule={args.rule}")
    commands = {}
    for fast_queue in transports:
        for max_batch_size in args.max_batch_size:
            shared = {"max_batch_size": max_batch_size, "batch_timeout": args.batch_timeout}
            shared |= {"workers": args.workers, "device": args.device}
            anchor = [*serve_anchor_command, *(f"--{key.replace('_', '-')}={value}" for key, value in shared.items())]
            anchor.append(f"--fast-queue={'on' if fast_queue else 'off'}")
            shared["fast_queue"] = str(fast_queue).lower()
            serve = [f"serve.{key}={value}" for key, value in shared.items()]
            if args.max_seq_length:
                anchor.append(f"--max-seq-length={args.max_seq_length}")
                serve.append(f"data.max_seq_length={args.max_seq_length}")
            commands[ServerSpec("anchor", fast_queue, max_batch_size)] = anchor
            for variant, exit_setting in variants.items():
                commands[ServerSpec(variant, fast_queue, max_batch_size)] = [*mode_serve, *exit_setting, *serve]
    return commands


def start_servers(commands: dict[ServerSpec, list[str]], logs: Path) -> dict[ServerSpec, Server]:
    servers = {}
    for spec, command in commands.items():
        port, log = free_port(), logs / f"{spec.name}.log"
        anchor = spec.variant == "anchor"
        where = [f"--port={port}"] if anchor else [f"serve.port={port}", f"paths.log_dir={logs}"]
        command = [*command, *where]
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        servers[spec] = Server(spec, process, port, log)
    for server in servers.values():
        wait_for_health(server)
    return servers


def wait_for_health(server: Server, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise De3Error(
                f"server {server.spec.name} exited before it answered /health:\n{server.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise De3Error(f"server {server.spec.name} did not answer /health in {limit_s:.0f} s")


def stop_servers(servers: dict[ServerSpec, Server]) -> None:
    """SIGTERM, then SIGKILL for whatever is left. Paused groups are resumed first, and given a
    moment: a SIGTERM that is pending when a stopped process resumes can be taken by any of its
    threads, and one taken off the main thread does not interrupt it from waiting."""
    for server in servers.values():
        with contextlib.suppress(ProcessLookupError):
            server.resume()
    time.sleep(1)
    for server in servers.values():
        server.process.terminate()
    for server in servers.values():
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def load(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[float, list[dict], list[float]]:
    """`concurrency` closed-loop clients for `seconds`: (requests/s, answers, latencies in s)."""
    deadline = time.perf_counter() + seconds
    results: list[list[tuple[float, dict]]] = [[] for _ in range(concurrency)]
    errors: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        turn = index * len(bodies) // concurrency
        try:
            while time.perf_counter() < deadline:
                body = bodies[turn % len(bodies)]
                turn += 1
                sent = time.perf_counter()
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status != 200:
                    errors.append(f"{response.status} {answer}")
                    return
                results[index].append((time.perf_counter() - sent, answer))
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise De3Error(f"port {port}: {errors[0]}")
    pooled = [r for part in results for r in part]
    return len(pooled) / elapsed, [answer for _, answer in pooled], [latency for latency, _ in pooled]


def request_bodies(predictor: EarlyExitPredictor, glue_dir: Path) -> list[bytes]:
    fields = ("text", "text_pair")[: len(predictor.task.local.text_columns)]
    examples = load_split(predictor.task, "validation", glue_dir, "local")
    return [json.dumps(dict(zip(fields, example.texts))).encode() for example in examples]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def spread(values: list[float], digits: int) -> str:
    """median (min–max)"""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


Cells = dict[tuple[ServerSpec, int], Cell]


def measure(args: argparse.Namespace, servers: dict[ServerSpec, Server], bodies: list[bytes]) -> Cells:
    cells = {(spec, c): Cell() for spec in servers for c in args.concurrency}
    specs = list(servers)
    for server in servers.values():
        server.pause()
    for round_index in range(args.rounds):
        shift = round_index % len(specs)
        for spec in specs[shift:] + specs[:shift]:
            server = servers[spec]
            server.resume()
            load(server.port, bodies, max(args.concurrency), args.warmup)
            for concurrency in args.concurrency:
                rate, answers, latencies = load(server.port, bodies, concurrency, args.seconds)
                cell = cells[spec, concurrency]
                cell.rates.append(rate)
                cell.latencies += latencies
                cell.exit_layers += [answer["exit_layer"] for answer in answers]
                cell.server_ms += [answer["latency_ms"] for answer in answers if "latency_ms" in answer]
                print(
                    f"round {round_index + 1}/{args.rounds}: {spec.name}, concurrency {concurrency}: {rate:.1f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
            server.pause()
    return cells


def goal_column(spec: ServerSpec, realised: float) -> str:
    return "" if spec.variant == "anchor" else f"{realised:.2f} ({'met' if realised >= GOAL else 'not met'})"


def table(args: argparse.Namespace, cells: Cells, num_layers: int) -> list[str]:
    """Every server at every concurrency, each against the anchor of its transport and batch size."""
    lines = [
        "| server | max batch size | concurrency | layer ratio reached | req/s: median (min–max) "
        f"| ÷ anchor: median (min–max) | ÷ anchor ÷ layer ratio (goal ≥ {GOAL}) | p50 ms | p95 ms | p99 ms "
        "| server latency_ms p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (spec, concurrency), cell in cells.items():
        ratio = layer_speedup(torch.tensor(cell.exit_layers), num_layers)
        over_anchor = [rate / base for rate, base in zip(cell.rates, cells[spec.anchor, concurrency].rates)]
        ms = [1000 * percentile(cell.latencies, q) for q in (50, 95, 99)]
        server_ms = f"{statistics.median(cell.server_ms):.1f}" if cell.server_ms else "—"
        lines.append(
            f"| {spec.label(args.rule)} | {spec.max_batch_size} | {concurrency} | {ratio:.2f} "
            f"| {spread(cell.rates, 1)} | {spread(over_anchor, 2)} "
            f"| {goal_column(spec, statistics.median(over_anchor) / ratio)} "
            f"| {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | {server_ms} |"
        )
    return lines


def best_batch_size_table(args: argparse.Namespace, cells: Cells, num_layers: int) -> list[str]:
    """Each server at the max batch size with its highest median req/s, per concurrency and
    transport, against the anchor at its own best (round by round)."""
    best: dict[tuple[str, bool, int], ServerSpec] = {}  # (variant, fast_queue, concurrency) → its best server
    for (spec, concurrency), cell in cells.items():
        key = (spec.variant, spec.fast_queue, concurrency)
        if key not in best or statistics.median(cell.rates) > statistics.median(cells[best[key], concurrency].rates):
            best[key] = spec
    lines = [
        "| server | concurrency | best max batch size | layer ratio reached | req/s: median (min–max) "
        f"| ÷ anchor at its best: median (min–max) | ÷ anchor ÷ layer ratio (goal ≥ {GOAL}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (_, fast_queue, concurrency), spec in best.items():
        cell, anchor = cells[spec, concurrency], cells[best["anchor", fast_queue, concurrency], concurrency]
        ratio = layer_speedup(torch.tensor(cell.exit_layers), num_layers)
        over_anchor = [rate / base for rate, base in zip(cell.rates, anchor.rates)]
        lines.append(
            f"| {spec.label(args.rule)} | {concurrency} | {spec.max_batch_size} | {ratio:.2f} "
            f"| {spread(cell.rates, 1)} | {spread(over_anchor, 2)} "
            f"| {goal_column(spec, statistics.median(over_anchor) / ratio)} |"
        )
    return lines


def report(args: argparse.Namespace, cells: Cells, predictor: EarlyExitPredictor, loads: tuple[float, float]) -> str:
    num_layers = predictor.model.num_layers
    backbone = predictor.model.backbone.config.name_or_path or "?"
    command = " ".join(["python -m benchmarks.serving", *sys.argv[1:]])
    lines = [
        "# Early exit under load: `mode=serve` servers against a Hugging Face anchor",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; load average {loads[0]:.1f} before the run, {loads[1]:.1f} after; "
        "the client threads run on the same cores as the servers.",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Run: `{args.run_dir}` ({predictor.task.name}, {backbone}, {num_layers} layers), rule `{args.rule}`; "
        f"dev-split texts, max {predictor.max_seq_length} tokens.",
        "- Serving: one server per row group and max batch size "
        f"(`serve.max_batch_size` {', '.join(map(str, args.max_batch_size))}), each "
        f"`serve.batch_timeout={args.batch_timeout}`, `serve.workers={args.workers}`, one torch thread per worker, "
        f"device {args.device}, `serve.fast_queue` {args.fast_queue} (both: each server over either transport, "
        "compared with the anchor over the same); the others stopped (SIGSTOP) while one is measured.",
        f"- Cells: {args.seconds:g} s each, {args.rounds} rounds, servers interleaved (order rotated per round), "
        f"{args.warmup:g} s warm-up per server and round; closed-loop clients, one keep-alive connection each.",
        "- req/s and ÷ anchor: median (min–max) over rounds, ÷ anchor against the anchor's same round and "
        "concurrency; p50/p95/p99: client-side, pooled over rounds; server latency_ms: from when the HTTP "
        "process queued the request to when the inference process answered it (early exit only); layer ratio: "
        "L·N / Σ exit layer over the cell's answers.",
        "",
        *table(args, cells, num_layers),
        "",
    ]
    if len(args.max_batch_size) > 1:
        lines += [
            "Each server at the max batch size it served best at (highest median req/s), against the anchor at "
            "the anchor's best, round by round:",
            "",
            *best_batch_size_table(args, cells, num_layers),
            "",
        ]
    return "\n".join(lines)


def serve_anchor(args: argparse.Namespace) -> None:
    """The anchor's server process."""
    predictor = EarlyExitPredictor.from_run(args.run_dir, args.rule, threshold=1, **_seq(args))
    api = AnchorAPI(predictor, max_batch_size=args.max_batch_size[0], batch_timeout=args.batch_timeout)
    server = build_server(api, workers=args.workers, device=args.device, fast_queue=args.fast_queue == "on")
    run_until_stopped(server, "127.0.0.1", args.port, log_level="warning")


def _seq(args: argparse.Namespace) -> dict[str, int]:
    return {"max_seq_length": args.max_seq_length} if args.max_seq_length else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rule", default="entropy")
    parser.add_argument("--targets", type=float, nargs="+", default=[1.5, 2.0, 3.0], help="speed-up targets")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="the full-depth server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=30, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=3, help="seconds per server and round, not measured")
    parser.add_argument(
        "--max-batch-size", type=int, nargs="+", default=[8], help="one server per value, for every variant"
    )
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the one the sweep recorded")
    parser.add_argument("--glue-dir", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    parser.add_argument("--output", type=Path, default=None, help="the markdown file (default: stdout)")
    parser.add_argument(
        "--fast-queue",
        choices=["off", "on", "both"],
        default="off",
        help="serve.fast_queue of every server; both: each server twice, in the same rounds, each compared with "
        "the anchor of its own transport",
    )
    parser.add_argument("--serve-anchor", action="store_true", help=argparse.SUPPRESS)  # the anchor's server
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.run_dir = args.run_dir.resolve()
    if args.serve_anchor:
        return serve_anchor(args)

    predictor = EarlyExitPredictor.from_run(args.run_dir, args.rule, threshold=1, **_seq(args))
    bodies = request_bodies(predictor, args.glue_dir)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as logs:
        servers = start_servers(server_commands(args, predictor.model.num_layers), Path(logs))
        try:
            cells = measure(args, servers, bodies)
        finally:
            stop_servers(servers)
    markdown = report(args, cells, predictor, (load_before, os.getloadavg()[0]))
    if args.output is None:
        print(markdown)
    else:
        args.output.write_text(markdown, encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(raw_cells(cells), indent=1) + "\n", encoding="utf-8")


def raw_cells(cells: Cells) -> list[dict]:
    """What the table is made from, per cell: every round's requests/s, how many answers left at
    each layer, and the client-side latency percentiles (seconds) pooled over rounds."""
    return [
        {
            "server": spec.variant,
            "fast_queue": spec.fast_queue,
            "max_batch_size": spec.max_batch_size,
            "concurrency": concurrency,
            "rates": cell.rates,
            "exit_layers": {str(layer): cell.exit_layers.count(layer) for layer in sorted(set(cell.exit_layers))},
            "latency_s": {f"p{q}": percentile(cell.latencies, q) for q in (50, 95, 99)},
            "server_ms_p50": statistics.median(cell.server_ms) if cell.server_ms else None,
        }
        for (spec, concurrency), cell in cells.items()
    ]


if __name__ == "__main__":
    main()
