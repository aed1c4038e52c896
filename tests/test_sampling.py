"""Batch order: length-grouped training batches seeded by (seed, epoch), length-sorted eval
batches whose outputs come back in input order."""

import torch

from de3.data.datamodule import TextTaskDataModule
from de3.data.sampling import EpochShuffleSampler, LengthGroupedSampler
from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import collect_exit_cache
from de3.models.backbone import EncoderBackbone
from de3.models.multi_exit import MultiExitModel
from tests.conftest import tiny_bert_encoder


def test_length_grouped_order_is_a_permutation_fixed_by_seed_and_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(100)]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=3, mega_batch_factor=5)
    first = list(sampler)
    assert sorted(first) == list(range(100))
    assert list(LengthGroupedSampler(lengths, batch_size=4, seed=3, mega_batch_factor=5)) == first
    # each mega-batch of 20 is the same set as the plain shuffle's, sorted longest first
    shuffled = EpochShuffleSampler(100, seed=3).permutation()
    for start in range(0, 100, 20):
        mega = first[start : start + 20]
        assert set(mega) == set(shuffled[start : start + 20])
        assert [lengths[i] for i in mega] == sorted((lengths[i] for i in mega), reverse=True)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(100))
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed epoch repeats


def test_grouped_batches_pad_less_and_eval_outputs_return_in_input_order(glue_dir, char_tokenizer):
    task = GLUE_TASKS["mrpc"]
    tokens = {}
    for grouped in (False, True):
        dm = TextTaskDataModule(
            task, char_tokenizer, data_dir=glue_dir, source="local", batch_size=2, group_by_length=grouped
        )
        dm.setup("fit")
        tokens[grouped] = sum(b["input_ids"].numel() for b in dm.train_dataloader())
    assert tokens[True] < tokens[False]

    _, encoder = tiny_bert_encoder()
    model = MultiExitModel(EncoderBackbone(encoder), task.num_outputs, pooling="cls", dropout=0.1)
    dm.eval_batch_size = 3
    split = task.eval_splits[0]
    sorted_loader = dm.whole_eval_dataloaders()[0]
    assert [len(b["labels"]) for b in sorted_loader] == [3, 3, 3, 1]
    cache = collect_exit_cache(model, sorted_loader)
    in_order = collect_exit_cache(model, dm._loader(split))
    expected_lengths = torch.tensor([len(f["input_ids"]) for f in dm.datasets[split]])
    assert torch.equal(cache.lengths, expected_lengths)
    assert torch.equal(cache.labels, in_order.labels)
    torch.testing.assert_close(cache.logits, in_order.logits, rtol=1e-4, atol=1e-5)
