"""A process's share of the machine under torchrun (device.py)."""

import os

import pytest
import torch

from celpaint.device import distributed_setup, rank_device, usable_cores, world_size


def test_ranks_on_one_machine_share_its_cores(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = usable_cores()
    assert alone == len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert usable_cores() == max(1, alone // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone * 4))
    assert usable_cores() == 1


def test_each_rank_takes_its_own_gpu_or_the_cpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    assert rank_device("cuda:3") == "cuda:3"  # outside torchrun: as given
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_size() == 4
    assert rank_device("cuda") == "cuda:1"
    assert rank_device("cuda:0") == "cuda:1"
    assert rank_device("cpu") == "cpu"
    assert rank_device("auto") == ("cuda:1" if torch.cuda.is_available() else "cpu")


def test_more_ranks_than_gpus_take_turns_on_them(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # Colorizing (gloo): both ranks on the one GPU.
    assert rank_device("cuda") == "cuda:0"
    # Training (NCCL) cannot share it: a clear error before anything starts.
    with pytest.raises(ValueError, match="--nproc-per-node 1"):
        distributed_setup("cuda")
