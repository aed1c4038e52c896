"""Prototypes under DDP: two CPU processes (gloo) with different batches end identical, and
equal to one process that saw both batches."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from de3.models.prototypes import PrototypicalNetworks


def _batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(100 + rank)
    # rank 1 never sees class 2 in its first batch: the initialisation must still agree
    return [
        (
            torch.randn(2, 6, 4, generator=generator),
            torch.randint(0, 2 if (rank, step) == (1, 0) else 3, (6,), generator=generator),
        )
        for step in range(5)
    ]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    protos = PrototypicalNetworks(num_layers=2, hidden_size=4, num_classes=3, gamma=0.3)
    for mapped, labels in _batches(rank):
        protos.update(mapped, labels, only_missing=True)
        protos.update(mapped, labels)
    torch.save(protos.state_dict(), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_end_with_identical_prototypes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0["prototypes"], rank1["prototypes"])
    assert torch.equal(rank0["initialized"], rank1["initialized"]) and rank0["initialized"].all()

    single = PrototypicalNetworks(num_layers=2, hidden_size=4, num_classes=3, gamma=0.3)
    for (m0, l0), (m1, l1) in zip(_batches(0), _batches(1)):
        mapped, labels = torch.cat([m0, m1], 1), torch.cat([l0, l1])
        single.update(mapped, labels, only_missing=True)
        single.update(mapped, labels)
    torch.testing.assert_close(rank0["prototypes"], single.prototypes, rtol=1e-6, atol=1e-6)
