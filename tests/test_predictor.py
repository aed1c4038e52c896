"""Real early exit equals the sweep's simulation, sample for sample; the predictor's API and errors."""

import json

import pytest
import torch

from de3.data.datamodule import TextTaskDataModule
from de3.data.sampling import input_order
from de3.data.tasks import GLUE_TASKS
from de3.errors import De3Error
from de3.exit_cache import collect_exit_cache
from de3.models.exit_rules import RULES, decide, rule_indicator
from de3.models.module import MultiExitModule
from de3.predictor import EarlyExitPredictor, threshold_for_speedup
from tests.conftest import GLUE_DIR, MINILM_DIR, needs_glue, needs_minilm

PARAMS = {"edr": {"lam": 1.0}, "pcee": {"patience": 2}, "dge": {"divergence": "js", "window": 1}}


def make_module(task: str, backbone: dict, bypass: bool = False) -> MultiExitModule:
    """A random multi-exit module; prototypes (classification) and bypasses get random values too."""
    torch.manual_seed(0)
    module = MultiExitModule(
        task={"name": task},
        backbone=backbone,
        loss={"_target_": "de3.models.losses.JointLoss"},
        exits={"pooling": backbone.pop("pooling", "cls")},
        optimizer={"lr": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.0},
        prototypes=None if GLUE_TASKS[task].is_regression else {"dim": 16},
        bypass={"enabled": bypass, "block_size": 2, "rank": 8},
    ).eval()
    if module.model.bypass is not None:
        for block in module.model.bypass.blocks:
            torch.nn.init.normal_(block.up.weight, std=0.5)
    if module.model.prototypes is not None:
        module.model.prototypes.prototypes.normal_()
        module.model.prototypes.initialized.fill_(True)
    return module


def tiny_backbone(layers=4):
    return {
        "name": "tiny_bert",
        "model_type": "bert",
        "random_init": True,
        "config_overrides": {
            "num_hidden_layers": layers,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
    }


def assert_real_equals_simulated(module, loader, quantiles=(0.05, 0.3, 0.6), rules=tuple(RULES)):
    cache = collect_exit_cache(module.model, loader)
    regression = module.task.is_regression
    checked = 0
    for rule in map(RULES.get, rules):
        if not rule.supports(regression, cache.distances is not None):
            continue
        params = PARAMS.get(rule.name, {})
        if regression:  # agreement within the typical layer-to-layer change of this random model
            params = {"delta": cache.logits[..., 0].diff(dim=0).abs().median().item()}
        indicator = rule_indicator(rule, cache.logits, cache.distances, params)
        finite = indicator[torch.isfinite(indicator)]
        thresholds = [1.0, 2.0] if rule.counts else torch.quantile(finite, torch.tensor(quantiles)).tolist()
        used_layers = set()
        for threshold in thresholds:
            layers, answers = decide(rule, cache.logits, indicator, threshold, regression)
            predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, rule.name, threshold, params)
            real = [
                predictor.predict_batch(b["input_ids"], b["attention_mask"], b.get("token_type_ids")) for b in loader
            ]
            order = input_order(loader)  # the cache is in input order; the loader's batches are sorted by length
            assert order is not None
            real_layers = torch.cat([r.exit_layer for r in real])[order]
            real_answers = torch.cat([r.prediction for r in real])[order]
            assert torch.equal(real_layers, layers), (rule.name, threshold)
            assert torch.equal(real_answers, answers), (rule.name, threshold)
            checked += 1
            used_layers |= set(layers.tolist())
        assert len(used_layers) > 1, rule.name  # the thresholds gave a real mix of exit layers
    return checked


@pytest.mark.parametrize("task, bypass", [("rte", False), ("mnli", False), ("stsb", False), ("rte", True)])
def test_tiny_model_real_exit_matches_simulation(task, bypass, glue_dir, char_tokenizer):
    module = make_module(task, tiny_backbone(), bypass)
    dm = TextTaskDataModule(module.task, module.tokenizer, data_dir=glue_dir, source="local", eval_batch_size=4)
    dm.setup("validate")
    assert assert_real_equals_simulated(module, dm.val_dataloader()[0]) >= (2 if task == "stsb" else 17)


@needs_minilm
@needs_glue
def test_real_minilm_exit_matches_simulation():
    module = make_module("sst2", {"name": "minilm", "path": str(MINILM_DIR), "pooling": "mean"})
    dm = TextTaskDataModule(
        module.task, module.tokenizer, data_dir=GLUE_DIR, source="local", eval_limit=96, eval_batch_size=32
    )
    dm.setup("validate")
    assert assert_real_equals_simulated(module, dm.val_dataloader()[0]) >= 17


def test_predict_texts_api_and_bad_input(caplog):
    module = make_module("rte", tiny_backbone(layers=3))
    predictor = EarlyExitPredictor(
        module.model, module.tokenizer, module.task, "entropy", threshold=0.999, max_seq_length=32
    )
    out = predictor.predict([("A man sleeps.", "Someone rests."), ("x" * 40, "y")])
    assert out.exit_layer.shape == (2,) and out.probability.shape == (2,)
    assert ((out.exit_layer >= 1) & (out.exit_layer <= 3)).all()
    assert "1 of 2 inputs are longer than max_seq_length=32" in caplog.text
    with pytest.raises(De3Error, match="input 1: empty text"):
        predictor.predict([("a", "b"), ("  ", "b")])
    with pytest.raises(De3Error, match="takes 2 text"):
        predictor.predict(["only one"])
    with pytest.raises(De3Error, match="does not apply"):
        stsb = make_module("stsb", tiny_backbone(3))
        EarlyExitPredictor(stsb.model, stsb.tokenizer, stsb.task, "entropy", 0.5)


def test_threshold_for_target_speedup(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(
        json.dumps(
            {
                "split": "validation",
                "rules": {
                    "edr": {
                        "params": {"lam": 1.0},
                        "thresholds": {"1.5": {"threshold": 0.3, "speedup": 1.52}, "2.0": None},
                    }
                },
            }
        )
    )
    assert threshold_for_speedup(path, "edr", 1.5) == 0.3
    with pytest.raises(De3Error, match="no threshold reaching 2"):
        threshold_for_speedup(path, "edr", 2)
    with pytest.raises(De3Error, match="no thresholds for rule 'dge'"):
        threshold_for_speedup(path, "dge", 1.5)
    with pytest.raises(De3Error, match="none at"):
        threshold_for_speedup(tmp_path / "missing.json", "edr", 1.5)


def test_predict_mode_end_to_end(tiny_config, tmp_path):
    from de3.errors import find_user_error
    from de3.jobs import predict, train

    train(tiny_config("task=rte", "backbone.config_overrides.num_hidden_layers=3"))
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    inputs = tmp_path / "pairs.txt"
    inputs.write_text("A man sleeps.\tSomeone rests.\nIt rains.\tThe street is wet.\n", encoding="utf-8")
    base = ["mode=predict", f"ckpt_path={checkpoint}", "exit.rule=entropy"]

    speedup = predict(tiny_config(*base, f"predict.input={inputs}", "exit.threshold=0.9999"))
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "input,prediction,probability,exit_layer" and len(rows) == 3
    assert rows[1].startswith(f"{inputs}:1,") and rows[1].split(",")[1] in ("entailment", "not_entailment")
    assert 1.0 <= speedup <= 3.0

    deploy = json.loads((tmp_path / "thresholds.json").read_text())["rules"]["entropy"]["thresholds"]
    reachable = [t for t, p in deploy.items() if p is not None]
    predict(tiny_config(*base, "predict.split=validation", f"exit.target_speedup={reachable[0]}"))
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 11

    api = EarlyExitPredictor.from_checkpoint(checkpoint, rule="entropy", target_speedup=float(reachable[0]))
    assert api.predict([("A man sleeps.", "Someone rests.")]).exit_layer.shape == (1,)

    (tmp_path / "bad.txt").write_bytes(b"fine\tok\ncaf\xe9\tok\n")
    for overrides, message in [
        ([f"predict.input={tmp_path / 'bad.txt'}", "exit.threshold=0.5"], "bad.txt:2: not valid UTF-8"),
        ([f"predict.input={inputs}", "exit.threshold=0.5", "task=mrpc"], "trained with task=rte, not task=mrpc"),
        (["predict.split=validation"], "exactly one of exit.threshold and exit.target_speedup"),
    ]:
        with pytest.raises(Exception) as info:
            predict(tiny_config(*base, *overrides))
        assert message in str(find_user_error(info.value))
