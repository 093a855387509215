"""The checkpoint cache over the runs of a session (no training: a tiny network's states)."""

from __future__ import annotations

import pytest
import torch

from nbseg.errors import InputError
from nbseg.training.callbacks import CheckpointCache, history_until, next_run


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def _states(cache: CheckpointCache) -> dict[tuple[int, int], dict]:
    return {(r["run"], r["epoch"]): r for r in cache.list()}


def test_the_reported_case_best_is_over_every_run_and_earlier_runs_stay():
    # run 1: four epochs, the last the best (0.4534); run 2 stopped in its first epoch
    cache = CheckpointCache(2**30)
    assert cache.begin_run() == 1
    net = _net()
    for epoch, value in zip((1, 2, 3, 4), (0.61, 0.52, 0.47, 0.4534)):
        cache.consider(epoch, {"val_loss": value}, net)
    assert cache.begin_run() == 2
    cache.consider(5, {"val_loss": 0.4977}, net, batches=(7, 16))
    rows = _states(cache)
    assert (1, 4) in rows and (2, 5) in rows  # the new run kept the earlier run's states
    assert cache.best.key == (1, 4) and cache.best_value == pytest.approx(0.4534)
    assert rows[(1, 4)]["reason"] == "best, last"
    assert rows[(2, 5)]["reason"] == "last" and not rows[(2, 5)]["best"]
    assert rows[(2, 5)]["name"] == "run 2 · epoch 5 (7/16 batches)"
    assert [r["reason"] for r in cache.list()].count("best, last") == 1
    assert sum(r["best"] for r in cache.list()) == 1
    # the run's own best (restore_best) is of the run; the cache's best over all
    assert cache.best_of_run(2).key == (2, 5) and cache.best_of_run(1).key == (1, 4)


def test_a_run_keeps_improvements_and_only_its_latest_last():
    cache = CheckpointCache(2**30)
    cache.begin_run()
    net = _net()
    for epoch, value in zip((1, 2, 3, 4), (0.5, 0.6, 0.4, 0.7)):
        cache.consider(epoch, {"val_loss": value}, net)
    # epoch 2 (no improvement) was the last, replaced by epoch 3 / 4; 1 and 3 improved
    assert cache.keys == [(1, 1), (1, 3), (1, 4)]
    assert cache.best.key == (1, 3)
    assert [r["reason"] for r in cache.list()] == ["improved", "best", "last"]
    # a new run does not drop the earlier run's last state
    cache.begin_run()
    cache.consider(5, {"val_loss": 0.9}, net)
    cache.consider(6, {"val_loss": 0.95}, net)
    assert cache.keys == [(1, 1), (1, 3), (1, 4), (2, 5), (2, 6)]
    assert cache.runs == [1, 2] and cache.best.key == (1, 3)


def test_the_budget_drops_the_oldest_never_the_best_nor_the_current_run():
    net = _net()
    size = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    cache = CheckpointCache(3 * size)
    cache.begin_run()
    for epoch, value in zip((1, 2, 3), (0.3, 0.4, 0.5)):
        cache.consider(epoch, {"val_loss": value}, net)
    cache.begin_run()
    for epoch, value in zip((4, 5, 6), (0.9, 0.8, 0.7)):
        cache.consider(epoch, {"val_loss": value}, net)
    assert cache.total_bytes <= 3 * size
    # the oldest went first (run 1's last, then run 2's first); the best of all (run 1
    # epoch 1) and the current run's best and latest (run 2 epoch 6) always stay
    assert cache.keys == [(1, 1), (2, 5), (2, 6)]
    assert cache.best.key == (1, 1)


def test_get_load_and_history_by_run_and_epoch():
    cache = CheckpointCache(2**30)
    a, b = _net(1), _net(2)
    cache.begin_run()
    cache.consider(3, {"val_loss": 0.5}, a)
    cache.begin_run()
    cache.consider(3, {"val_loss": 0.6}, b)  # the same epoch number on another branch
    assert torch.equal(cache.get(3, run=1).state["weight"], a.weight)
    assert torch.equal(cache.get(3).state["weight"], b.weight)  # default: the latest run
    with pytest.raises(InputError, match="run 1 · epoch 9"):
        cache.get(9, run=1)
    history = [{"epoch": 1}, {"epoch": 2, "run": 1}, {"epoch": 3, "run": 2}, {"epoch": 4, "run": 2}]
    assert [h["epoch"] for h in history_until(history, 3, 2)] == [1, 2, 3]
    assert [h["epoch"] for h in history_until(history, 2, 1)] == [1, 2]
    assert next_run(history) == 3 and next_run([]) == 1
    assert next_run([{"epoch": 1}], cache) == 3  # rows without a run are run 1
    cache.check_network(_net())
    with pytest.raises(InputError, match="another network"):
        cache.check_network(torch.nn.Linear(4, 2))
