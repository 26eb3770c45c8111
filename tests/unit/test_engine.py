"""One training loop and one evaluation, alone and on two workers (gloo, on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from launch.local.processes import free_port
from trainer.cluster import SINGLE, Cluster
from trainer.data import UNREADABLE
from trainer.engine import epoch_order, evaluate, evaluation_batches, share_batches, train_one_epoch
from trainer.sources import CachedFeatures

# 3 global batches, the last of one item: on two workers, one of them runs a filler.
ITEMS, WIDTH, CLASSES, BATCH = 9, 6, 3, 4


def _source() -> CachedFeatures:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(ITEMS, WIDTH, generator=generator)
    labels = torch.randint(0, CLASSES, (ITEMS,), generator=generator)
    labels[5] = UNREADABLE  # an undecodable file: it counts nowhere
    return CachedFeatures(features, labels, torch.device("cpu"))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(WIDTH, CLASSES)


def _epoch_and_test(cluster: Cluster) -> dict[str, object]:
    """One epoch of a fresh model on every worker's share, then an evaluation with
    predictions: what the leader ends with."""
    source, model = _source(), _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    network = DistributedDataParallel(model) if cluster.distributed else model
    order = epoch_order(ITEMS, 1, 1)
    criterion = nn.CrossEntropyLoss()
    train = train_one_epoch(
        network, share_batches(source, order, BATCH, cluster), optimizer, criterion, 1, cluster
    )
    test = evaluate(
        model, evaluation_batches(source, BATCH, cluster), criterion, cluster, keep_predictions=True
    )
    assert test.predictions is not None
    return {
        "train": (train.loss, train.accuracy, train.count),
        "test": (test.loss, test.accuracy, test.count),
        "weights": model.state_dict(),
        "logits": test.predictions.logits,
        "labels": test.predictions.labels,
    }


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = _epoch_and_test(Cluster(rank=rank, world_size=2, local_world_size=2))
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def test_an_evaluation_gives_every_items_prediction_in_channel_order() -> None:
    source, model = _source(), _model()
    batches = evaluation_batches(source, BATCH)
    result = evaluate(model, batches, nn.CrossEntropyLoss(), keep_predictions=True)
    assert result.predictions is not None
    assert torch.equal(result.predictions.labels, source.labels)
    with torch.no_grad():
        logits = model(source.features)
    assert torch.allclose(result.predictions.logits, logits)
    readable = source.labels != UNREADABLE
    expected = nn.functional.cross_entropy(logits[readable], source.labels[readable])
    assert result.count == ITEMS - 1
    assert result.loss == pytest.approx(float(expected), rel=1e-6)
    assert torch.allclose(result.predictions.probabilities.sum(1), torch.ones(ITEMS))


def test_two_workers_take_the_steps_and_give_the_predictions_of_one(tmp_path: Path) -> None:
    alone = _epoch_and_test(SINGLE)
    out = tmp_path / "leader.pt"
    mp.spawn(_worker, (free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    assert two["train"] == pytest.approx(alone["train"], rel=1e-5)
    assert two["test"] == pytest.approx(alone["test"], rel=1e-5)
    for name, weight in alone["weights"].items():  # type: ignore[attr-defined]
        assert torch.allclose(two["weights"][name], weight, atol=1e-6), name
    assert torch.equal(two["labels"], alone["labels"])
    assert torch.allclose(two["logits"], alone["logits"], atol=1e-6)
