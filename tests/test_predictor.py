"""Real early exit equals the sweep's simulation, sample for sample; the predictor's API and errors."""

import json

import pytest
import torch

from de3.data.datamodule import TextTaskDataModule
from de3.data.sampling import input_order
from de3.data.tasks import GLUE_TASKS
from de3.devices import resolve_device, resolve_precision
from de3.errors import De3Error
from de3.exit_cache import collect_exit_cache
from de3.models.exit_rules import RULES, decide, rule_indicator
from de3.models.indicators import normalized_entropy
from de3.models.module import MultiExitModule
from de3.predictor import EarlyExitPredictor
from de3.text_input import max_chars_for
from de3.thresholds import RunThresholds
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


def assert_real_equals_simulated(
    module, loader, quantiles=(0.05, 0.3, 0.6), rules=tuple(RULES), device="cpu", precision="fp32"
):
    module.model.to(device=resolve_device(device), dtype=resolve_precision(precision))
    cache = collect_exit_cache(module.model, loader, precision=precision)
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
            predictor = EarlyExitPredictor(
                module.model,
                module.tokenizer,
                module.task,
                rule.name,
                threshold,
                params,
                device=device,
                precision=precision,
            )
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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
)
def test_real_exit_matches_simulation_on_the_device_and_in_the_precision_it_runs(device, precision, glue_dir):
    """Every tensor the predictor makes lives on its input's device (on CUDA, indices made on the
    CPU stopped it), and a cache computed where and as the predictor runs predicts it exactly."""
    module = make_module("rte", tiny_backbone())
    dm = TextTaskDataModule(module.task, module.tokenizer, data_dir=glue_dir, source="local", eval_batch_size=4)
    dm.setup("validate")
    checked = assert_real_equals_simulated(module, dm.val_dataloader()[0], device=device, precision=precision)
    assert checked >= 17 and next(module.model.parameters()).dtype == resolve_precision(precision)


def test_device_and_precision_names_are_checked():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(De3Error, match="device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(De3Error, match="CUDA is not available here"):
            resolve_device("cuda")
    with pytest.raises(De3Error, match=r"precision 'fp8': choose from \['bf16', 'fp16', 'fp32'\]"):
        resolve_precision("fp8")


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
    texts = [("A man sleeps.", "Someone rests."), ("x" * 40, "y")]
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", 0.5, max_seq_length=32)
    # every exit's entropy on the same (truncated) inputs, from one full forward pass
    batch = predictor.collate(predictor.tokenize(texts))
    with torch.no_grad():
        logits = module.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    entropy = normalized_entropy(logits)  # [3 layers, 2 samples]
    # a threshold between the two samples' layer-1 entropies: the surer one leaves at layer 1
    first, other = entropy[0].argmin().item(), entropy[0].argmax().item()
    assert entropy[0, first] < entropy[0, other]
    predictor.threshold = entropy[0].mean().item()
    expected = [0, 0]
    expected[first], expected[other] = 1, 2 if entropy[1, other] < predictor.threshold else 3
    out = predictor.predict(texts)
    assert out.exit_layer.tolist() == expected
    chosen = logits[out.exit_layer - 1, torch.arange(2)]
    torch.testing.assert_close(out.logits, chosen)
    torch.testing.assert_close(out.probability, torch.softmax(chosen, -1).max(-1).values)
    assert out.prediction.tolist() == chosen.argmax(-1).tolist()
    predictor.threshold = 0.0  # nothing is below 0: the last layer answers
    assert predictor.predict(texts).exit_layer.tolist() == [3, 3]
    assert "1 of 2 inputs are longer than max_seq_length=32" in caplog.text
    with pytest.raises(De3Error, match="input 1: must not be empty"):
        predictor.predict([("a", "b"), ("  ", "b")])
    for invisible in ("\u200b", "\x00", " \t\n"):  # zero-width space, NUL, whitespace
        with pytest.raises(De3Error, match="input 0: must not be empty: no visible character"):
            predictor.predict([(invisible, "b")])
    with pytest.raises(De3Error, match="input 0: not valid Unicode: lone surrogate U\\+D800 at character 0"):
        predictor.predict([("\ud800 lone surrogate", "b")])
    with pytest.raises(De3Error, match="takes 2 text"):
        predictor.predict(["only one"])
    with pytest.raises(De3Error, match="does not apply"):
        stsb = make_module("stsb", tiny_backbone(3))
        EarlyExitPredictor(stsb.model, stsb.tokenizer, stsb.task, "entropy", 0.5)
    # parameters and thresholds are checked when the predictor is built, not deep inside a batch
    with pytest.raises(De3Error, match="exit.params.pcee.patience=0: Input should be greater than or equal to 1"):
        EarlyExitPredictor(module.model, module.tokenizer, module.task, "pcee", 0.5, {"patience": 0})
    with pytest.raises(De3Error, match="exit.threshold=0 for rule patience"):
        EarlyExitPredictor(module.model, module.tokenizer, module.task, "patience", 0)
    with pytest.raises(De3Error, match=r"exit.threshold=-0.5: rule entropy's indicator lies in \[0, 1\]"):
        EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", -0.5)


def test_threshold_for_target_speedup(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(
        json.dumps(
            {
                "checkpoint": {"path": "checkpoints/best.ckpt", "sha256": "0" * 64},
                "split": "validation",
                "max_seq_length": 64,
                "rules": {
                    "edr": {
                        "params": {"lam": 3.0},
                        "thresholds": {"1.5": {"threshold": 0.3, "speedup": 1.52}, "2.0": None},
                    }
                },
            }
        )
    )
    run = RunThresholds.read(path)
    assert run.point("edr", 1.5) == {"threshold": 0.3, "speedup": 1.52} and run.params("edr") == {"lam": 3.0}
    assert (run.checkpoint, run.split, run.max_seq_length) == (tmp_path / "checkpoints/best.ckpt", "validation", 64)
    with pytest.raises(De3Error, match="no threshold reaching 2"):
        run.point("edr", 2)
    with pytest.raises(De3Error, match="no thresholds for rule 'dge'"):
        run.point("dge", 1.5)
    with pytest.raises(De3Error, match="which no longer exists"):
        run.recorded_checkpoint()
    with pytest.raises(De3Error, match="no thresholds.json at"):
        RunThresholds.read(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"split": "validation"}')
    with pytest.raises(De3Error, match="is not a de3 thresholds.json"):
        RunThresholds.read(tmp_path / "broken.json")


def test_a_huge_text_is_cut_by_characters_and_tokenized_once(caplog):
    """A 10 MB text held the only server worker 35 s: tokenized whole, then again untruncated."""
    module = make_module("sst2", tiny_backbone(layers=2))
    predictor = EarlyExitPredictor(module.model, module.tokenizer, module.task, "entropy", 0.5, max_seq_length=16)
    calls = []
    tokenizer = predictor.tokenizer

    def spy(*columns, **kwargs):
        calls.append([len(text) for column in columns for text in column])
        return tokenizer(*columns, **kwargs)

    predictor.tokenizer = spy
    spy.is_fast = tokenizer.is_fast
    features = predictor.tokenize(["word " * 2_000_000, "short"])
    assert len(calls) == 1 and calls[0] == [max_chars_for(16), 5]
    assert [len(f["input_ids"]) for f in features] == [16, 7] and "offset_mapping" not in features[0]
    assert "1 of 2 inputs are longer than max_seq_length=16 tokens and were truncated" in caplog.text
