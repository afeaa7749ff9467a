"""The benches' timing helper (``tdlm_bench.timing.timed``), on a fake clock: exact, not
timing-dependent."""

import statistics

import pytest
import torch
from tdlm_bench import timing
from tdlm_bench.timing import timed


class FakeClock:
    """``time.perf_counter`` stand-in; each call of the timed function advances it by the next
    of ``durations``."""

    def __init__(self, durations):
        self.now, self.durations, self.events = 100.0, list(durations), []

    def perf_counter(self):
        self.events.append("clock")
        return self.now

    def work(self):
        self.events.append("call")
        self.now += self.durations.pop(0)
        return f"result {len(self.durations)}"


@pytest.fixture
def clock(monkeypatch):
    def make(durations):
        fake = FakeClock(durations)
        monkeypatch.setattr(timing.time, "perf_counter", fake.perf_counter)
        return fake

    return make


def test_one_call_returns_its_time_and_result(clock):
    fake = clock([2.5])
    assert timed(fake.work) == (2.5, "result 0")
    assert fake.events == ["clock", "call", "clock"]


def test_repeats_runs_the_function_that_many_times_and_returns_the_minimum(clock):
    fake = clock([3.0, 1.25, 2.0, 4.0])
    seconds, result = timed(fake.work, repeats=4)
    assert seconds == 1.25
    assert result == "result 0"  # the last call's
    assert fake.events.count("call") == 4
    assert fake.durations == []


def test_summary_picks_another_figure(clock):
    fake = clock([3.0, 1.0, 2.0, 8.0])
    assert timed(fake.work, repeats=4, summary=statistics.median)[0] == 2.5


def test_repeats_must_be_positive(clock):
    fake = clock([1.0])
    with pytest.raises(ValueError, match="repeats"):
        timed(fake.work, repeats=0)
    assert fake.events == []


def test_cuda_device_is_synchronised_before_and_after_each_call(clock, monkeypatch):
    fake = clock([1.0, 2.0])
    synced = []

    def synchronize(device):
        synced.append(device)
        fake.events.append("sync")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)  # no GPU needed
    assert timed(fake.work, device="cuda:0", repeats=2) == (1.0, "result 0")
    # Before: outside the timed span (queued work not counted); after: inside it.
    assert fake.events == ["sync", "clock", "call", "sync", "clock"] * 2
    assert synced == [torch.device("cuda:0")] * 4


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_no_synchronisation_off_cuda(clock, monkeypatch, device):
    fake = clock([1.0])

    def synchronize(device):
        raise AssertionError("synchronised off CUDA")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    assert timed(fake.work, device=device) == (1.0, "result 0")
