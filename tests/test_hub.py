"""An unreachable Hugging Face hub is known at once, and a run names everything it is missing;
de3's modules import each other without a cycle."""

import ast
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

import de3
from de3 import hub
from de3.data.tasks import task_from_config
from de3.errors import De3Error
from de3.jobs import run
from tests.conftest import compose_config


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: a connection is refused at once


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset and no probe remembered; restored afterwards."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub._probe.cache_clear()
    yield monkeypatch
    hub._probe.cache_clear()


def test_one_probe_per_process_then_offline_mode(online):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    first = hub.hub_unreachable()
    assert first is not None and "did not answer" in first
    assert constants.HF_HUB_OFFLINE  # Hugging Face libraries now go to their caches at once
    online.setattr(constants, "HF_HUB_OFFLINE", False)
    online.delenv("HF_HUB_OFFLINE")
    assert hub.hub_unreachable() == first and hub._probe.cache_info().misses == 1  # not probed again


def test_offline_setting_is_honoured_without_a_probe(online):
    online.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_unreachable() == "HF_HUB_OFFLINE is set"
    assert hub._probe.cache_info().misses == 0


def test_local_inputs_need_no_probe(online, tiny_config):
    cfg = tiny_config("task=rte")
    task = task_from_config(cfg.task)
    assert hub.missing_hub_inputs(cfg.backbone, task, ("train", "validation"), cfg.data.data_dir, "auto") == []
    assert hub._probe.cache_info().misses == 0


def test_train_without_hub_fails_at_once_naming_model_and_data(online, tmp_path):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    online.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    online.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    overrides = ["task=mnli", "backbone=roberta", f"data.data_dir={tmp_path / 'nothing'}"]
    cfg = compose_config([*overrides, "task.calibration_fraction=0.1"], tmp_path)  # the default: cut from train
    with pytest.raises(De3Error) as info:
        run(cfg)
    message = str(info.value)
    assert message.startswith("2 input(s) missing")
    assert "model 'roberta-base'" in message and "backbone.path=DIR" in message
    assert "data of task 'mnli'" in message and "MNLI/train.tsv" in message and "data.data_dir=DIR" in message


def de3_import_graph() -> dict[str, set[str]]:
    """Each de3 module → the de3 modules it imports anywhere in its code (an import deferred into
    a function hides a cycle, it does not remove it)."""
    root = Path(de3.__file__).parent
    paths = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        graph[name] = {module for module in imported if module in paths and module != name}
    return graph


def import_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The modules along one chain of imports from `start` to `goal` (depth first), or None."""
    stack, seen = [[start]], {start}
    while stack:
        chain = stack.pop()
        if chain[-1] == goal:
            return chain
        for module in sorted(graph[chain[-1]] - seen):
            seen.add(module)
            stack.append([*chain, module])
    return None


def test_de3_modules_import_each_other_without_a_cycle():
    graph = de3_import_graph()
    assert "de3.data.tasks" in graph["de3.hub"]  # the graph holds the package's imports
    cycles = [[a, *chain] for a in graph for b in graph[a] if (chain := import_path(graph, b, a))]
    assert cycles == []
