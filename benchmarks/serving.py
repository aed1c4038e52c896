"""Early exit under load: `mode=serve`'s LitServe server on 127.0.0.1, a fixed number of requests.

python -m benchmarks.serving RUN_DIR > benchmarks/serving.md

RUN_DIR is a trained SST-2 run's output folder (e.g. from `python run.py experiment=quickstart`):
the checkpoint its `thresholds.json` was computed on, with the rule's recorded parameters. One
LitServer holds five APIs, each with its own inference process and the same dynamic batching
(`--max-batch-size`, `--batch-timeout`):
- `/full`: the early-exit predictor that never exits (every layer and every exit head);
- `/sr1.5`, `/sr2`, `/sr3`: the predictor with `--rule` at the thresholds.json threshold for
  1.5×, 2×, 3× (chosen by the run's sweep; the speed-up ratio reached on these requests is
  reported beside it);
- `/anchor`: `AutoModelForSequenceClassification` with the run's encoder weights (its head is
  untrained: the anchor measures speed only), behind the same request handling and batching.
A client in this process sends `--requests` SST-2 dev sentences from `--concurrency` threads,
each thread on its own keep-alive connection. The variants take turns within each of
`--repeats` rounds; latency percentiles pool the rounds, requests per second is their median.
"""

import argparse
import contextlib
import copy
import datetime
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from benchmarks.per_exit_table import machine
from de3.data.sources import load_split
from de3.errors import De3Error
from de3.models.exit_rules import RULES
from de3.models.module import MultiExitModule
from de3.predictor import EarlyExitPredictor
from de3.serving import EarlyExitAPI, build_server
from de3.thresholds import resolve_exit_setting

TARGETS = (1.5, 2.0, 3.0)
CONCURRENCY = (1, 8, 32)


class AnchorAPI(EarlyExitAPI):
    """The same API answered by a plain full-depth Hugging Face classifier."""

    def setup(self, device: str) -> None:
        encoder = self.predictor.model.backbone.encoder
        config = copy.deepcopy(encoder.config)
        config.num_labels = self.predictor.task.num_outputs
        self.classifier = AutoModelForSequenceClassification.from_config(config).eval()
        getattr(self.classifier, self.classifier.base_model_prefix).load_state_dict(encoder.state_dict(), strict=False)

    @torch.inference_mode()
    def answer(self, texts):
        batch = self.predictor.collate(self.predictor.tokenize(texts))
        probabilities = self.classifier(**batch).logits.softmax(-1)
        layers, labels = self.predictor.model.num_layers, self.predictor.task.label_names
        return [
            {"label": labels[int(p.argmax())], "probability": float(p.max()), "exit_layer": layers, "speedup": 1.0}
            for p in probabilities
        ]


def serve(args: argparse.Namespace) -> None:
    """The server process: every variant at its own path."""
    settings = {t: resolve_exit_setting(args.rule, run_dir=args.run_dir, target_speedup=t) for t in TARGETS}
    recorded = settings[TARGETS[0]]
    module = MultiExitModule.from_checkpoint(recorded.checkpoint)

    def predictor(threshold: float) -> EarlyExitPredictor:
        return EarlyExitPredictor(
            module.model,
            module.tokenizer,
            module.task,
            args.rule,
            threshold,
            recorded.params,
            max_seq_length=args.max_seq_length or recorded.max_seq_length,
        )

    batching = {"max_batch_size": args.max_batch_size, "batch_timeout": args.batch_timeout}
    # a threshold no sample reaches: more layers of patience than there are, or below every indicator
    never = predictor(module.model.num_layers + 1 if RULES[args.rule].counts else -sys.float_info.max)
    apis = [AnchorAPI(never, api_path="/anchor", **batching), EarlyExitAPI(never, api_path="/full", **batching)]
    for target in TARGETS:
        apis.append(EarlyExitAPI(predictor(settings[target].threshold), api_path=f"/sr{target:g}", **batching))
    build_server(*apis).run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


def load(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], float, list[int]]:
    """Send every body once from `concurrency` threads; (latencies s, requests/s, exit layers)."""
    host, path = url.removeprefix("http://").split("/", 1)
    shares = [bodies[i::concurrency] for i in range(concurrency)]

    def client(share: list[bytes]) -> list[tuple[float, int]]:
        connection, results = http.client.HTTPConnection(host, timeout=120), []
        for body in share:
            started = time.perf_counter()
            connection.request("POST", "/" + path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 200:
                raise De3Error(f"{url}: {response.status} {answer}")
            results.append((time.perf_counter() - started, answer["exit_layer"]))
        connection.close()
        return results

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for part in pool.map(client, shares) for r in part]
    elapsed = time.perf_counter() - started
    return [r[0] for r in results], len(results) / elapsed, [r[1] for r in results]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def wait_for_health(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise De3Error("the server exited before it answered /health")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(1)
    raise De3Error("the server did not answer /health in 600 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rule", default="entropy")
    parser.add_argument("--glue-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the one the sweep recorded")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    predictor = EarlyExitPredictor.from_run(args.run_dir, args.rule, threshold=0.5)
    load_before = os.getloadavg()[0]
    sentences = [e.texts[0] for e in load_split(predictor.task, "validation", args.glue_dir, "local")]
    bodies = [json.dumps({"text": sentences[i % len(sentences)]}).encode() for i in range(args.requests)]
    variants = ["anchor", "full", *(f"sr{t:g}" for t in TARGETS)]
    base = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "benchmarks.serving", *sys.argv[1:], "--serve"]
    server = subprocess.Popen(command, start_new_session=True)
    try:
        wait_for_health(base, server)
        for variant in variants:  # warm-up
            load(f"{base}/{variant}", bodies[:16], 8)
        latencies = {(v, c): [] for v in variants for c in CONCURRENCY}
        rates = {(v, c): [] for v in variants for c in CONCURRENCY}
        layers: dict[str, list[int]] = {}
        for _ in range(args.repeats):
            for concurrency in CONCURRENCY:
                for variant in variants:
                    seconds, rate, exits = load(f"{base}/{variant}", bodies, concurrency)
                    latencies[variant, concurrency] += seconds
                    rates[variant, concurrency].append(rate)
                    layers[variant] = exits
    finally:  # LitServe's processes (HTTP servers, inference workers) are all in the server's group
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    num_layers, backbone = predictor.model.num_layers, predictor.model.backbone.config.name_or_path or "?"
    anchor = {c: statistics.median(rates["anchor", c]) for c in CONCURRENCY}
    print("# Early exit under load: `mode=serve` on LitServe\n")
    print(f"- Command: `python -m benchmarks.serving {' '.join(sys.argv[1:])}`")
    print(
        f"- Machine: {machine()}; load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after; "
        "the load generator runs on the same cores as the server: compare rows, not absolute numbers."
    )
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        f"- Run: `{args.run_dir}` ({predictor.task.name}, {backbone}, {num_layers} layers); "
        f"rule `{args.rule}`; "
        f"{args.requests} requests (SST-2 dev sentences, max {predictor.max_seq_length} tokens) per cell and round, "
        f"{args.repeats} rounds, variants interleaved; dynamic batching max_batch_size={args.max_batch_size}, "
        f"batch_timeout={args.batch_timeout} s; one inference process per variant, 127.0.0.1.\n"
    )
    print(
        "| server | speed-up ratio reached | concurrency | p50 ms | p95 ms | p99 ms | req/s | req/s ÷ anchor |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    names = {"anchor": "`AutoModelForSequenceClassification` (anchor)", "full": "early-exit predictor, full depth"}
    for variant in variants:
        name = names.get(variant, f"early exit at {variant[2:]}× ({args.rule})")
        ratio = num_layers * len(layers[variant]) / sum(layers[variant])
        for c in CONCURRENCY:
            ms = [1000 * percentile(latencies[variant, c], q) for q in (50, 95, 99)]
            rate = statistics.median(rates[variant, c])
            print(
                f"| {name} | {ratio:.2f} | {c} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | {rate:.1f} "
                f"| {rate / anchor[c]:.2f} |"
            )

    anchor_p99, sr2_p99 = (1000 * percentile(latencies[v, 8], 99) for v in ("anchor", "sr2"))
    gain = statistics.median(rates["sr2", 8]) / anchor[8]
    met = "met" if gain >= 1.8 and sr2_p99 <= anchor_p99 else "not met"
    print(
        f"\nGoal (at 2×, concurrency 8: ≥ 1.8× the anchor's req/s with its p99 or better): **{met}** — "
        f"{gain:.2f}× the req/s, p99 {sr2_p99:.0f} ms against the anchor's {anchor_p99:.0f} ms."
    )


if __name__ == "__main__":
    main()
