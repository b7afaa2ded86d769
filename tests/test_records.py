"""Training records: the order training reads them in, the reader, the loader, and a 2-process epoch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from miro_core.errors import DataError
from miro_core.records.layout import read_records
from miro_core.records.order import ShuffledOrder, StepSampler
from miro_core.records.reader import Collate, RecordDataset, make_loader
from miro_core.records.synthetic import write_synthetic_records

from .conftest import two_cpu_processes


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """230 pixel records in shards of 50 (the last one shorter), 2 score columns."""
    out = tmp_path_factory.mktemp("records") / "r"
    write_synthetic_records(str(out), 230, shard_size=50, input_kind="pixels", input_shape=(3, 8, 8), text_shape=(4, 6))
    return out


def test_every_epoch_is_a_permutation_and_depends_only_on_the_seed():
    sizes = [50, 50, 50, 30]
    order = ShuffledOrder(sizes, seed=5, block_shards=2)
    first, second = order.indices(0, 0, 180), order.indices(1, 0, 180)
    assert sorted(first) == list(range(180)) and sorted(second) == list(range(180))
    assert first != second, "each epoch is shuffled anew"
    assert ShuffledOrder(sizes, seed=5, block_shards=2).indices(0, 0, 180) == first
    assert ShuffledOrder(sizes, seed=6, block_shards=2).indices(0, 0, 180) != first
    # reading in pieces gives the same sequence as reading at once
    assert order.indices(0, 0, 70) + order.indices(0, 70, 110) == first


def test_a_block_of_positions_reads_only_its_own_shards():
    sizes = [40] * 6
    order = ShuffledOrder(sizes, seed=0, block_shards=2)
    sequence = order.indices(0, 0, 240)
    for block in range(3):
        shards = {i // 40 for i in sequence[block * 80 : (block + 1) * 80]}
        assert len(shards) == 2, "a block of 2 shards is shuffled within itself"


def test_resumed_sampler_continues_the_same_order():
    order = ShuffledOrder([30, 30, 25], seed=1, block_shards=2)
    straight = list(StepSampler(order, 8, accum=2, stop_step=12))
    resumed = list(StepSampler(order, 8, accum=2, start_step=5, stop_step=12))
    assert straight[10:] == resumed and len(resumed) == 14


def test_processes_split_each_epoch_exactly():
    """K processes with batch B read what one process with batch K x B reads, each sample once per epoch."""
    order = ShuffledOrder([32, 32, 32, 32], seed=2, block_shards=3)
    single = list(StepSampler(order, 16, stop_step=8))
    ranks = [list(StepSampler(order, 4, rank=r, world=4, stop_step=8)) for r in range(4)]
    for step in range(8):
        assert sum((ranks[r][step] for r in range(4)), []) == single[step]
    epoch = [i for r in range(4) for batch in ranks[r] for i in batch]
    assert sorted(epoch) == list(range(128))


def test_dataset_reads_back_what_was_written(records: Path):
    info = read_records(str(records))
    assert info.samples == 230 and info.shard_sizes == [50, 50, 50, 50, 30]
    assert info.input_shape == (3, 8, 8) and info.text_shape == (4, 6)
    dataset = RecordDataset(info, open_shards=2)
    record = dataset[123]
    assert record["input"].dtype == np.uint8 and record["input"].shape == (3, 8, 8)
    assert record["tokens"].dtype == np.float16 and record["tokens"].shape == (4, 6)
    assert record["mask"].dtype == np.bool_ and record["mask"][0]
    assert set(record["scores"]) == {"reward-a", "reward-b"} and record["caption"] == "synthetic caption 123"
    for index in (0, 49, 50, 229):
        assert dataset[index]["caption"] == f"synthetic caption {index}"
    assert len(dataset._open) <= 2, "at most open_shards shards stay open"
    with pytest.raises(IndexError):
        dataset[230]


def test_loader_with_workers_gives_the_same_batches_as_without(records: Path, registry):
    from miro_core.bins import BinsFile

    info = read_records(str(records))
    binner = registry.binners.create("uniform", {"num_bins": 4})
    binner.fit(np.linspace(0, 1, 100))
    bins = BinsFile("uniform", 4, {"reward-a": binner}, {}, {})
    collate = Collate(["reward-a"], bins)
    order = ShuffledOrder(info.shard_sizes, seed=0, block_shards=2)

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        loader = make_loader(RecordDataset(info), StepSampler(order, 16, stop_step=6), collate, workers)
        return list(loader)

    inline, parallel = batches(0), batches(2)
    assert len(inline) == len(parallel) == 6
    for a, b in zip(inline, parallel):
        assert a.keys() == b.keys() == {"index", "input", "tokens", "mask", "levels"}
        assert all(torch.equal(a[k], b[k]) for k in a)
    levels = inline[0]["levels"]
    assert levels.shape == (16, 1) and levels.dtype == torch.float32
    assert set((levels.flatten() * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_shards_without_or_with_a_wrong_member_index(records: Path, tmp_path: Path):
    """Without its .index.npy a shard is scanned; an index that points elsewhere is caught, not trusted."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(records, copy)
    (copy / "shards" / "synthetic-000001.index.npy").unlink()
    reference = RecordDataset(read_records(str(records)))
    scanned = RecordDataset(read_records(str(copy)))
    for index in (50, 77, 99):
        assert np.array_equal(scanned[index]["tokens"], reference[index]["tokens"])
    members = np.load(copy / "shards" / "synthetic-000002.index.npy")
    members[[0, 1]] = members[[1, 0]]
    np.save(copy / "shards" / "synthetic-000002.index.npy", members)
    with pytest.raises(DataError, match="not where its index says"):
        RecordDataset(read_records(str(copy)))[100]


def test_records_on_another_fsspec_filesystem_are_cached_locally(records: Path, tmp_path: Path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in records.rglob("*"):
        if path.is_file():
            memory.pipe(f"/recs/{path.relative_to(records)}", path.read_bytes())
    info = read_records("memory://recs")
    dataset = RecordDataset(info, cache_dir=str(tmp_path / "cache"))
    local = RecordDataset(read_records(str(records)))
    assert np.array_equal(dataset[77]["input"], local[77]["input"])
    assert len(list((tmp_path / "cache").glob("*.tar"))) == 1


def test_workers_asking_for_one_remote_shard_at_once_fetch_it_once(tmp_path: Path, monkeypatch):
    """Every worker of every process on a node may want the same remote shard at the start of a shuffle block:
    one downloads it, the others wait for that copy."""
    import threading
    import time

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from miro_core.records.reader import local_copy

    fsspec.filesystem("memory").pipe("/once/shard-000000.tar", b"x" * 1000)
    fetched: list[str] = []
    original = MemoryFileSystem.get

    def slow_get(self, *args, **kwargs):
        fetched.append(args[0])
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "get", slow_get)
    paths: list[str] = []
    readers = [
        threading.Thread(target=lambda: paths.append(local_copy("memory://once/shard-000000.tar", str(tmp_path))))
        for _ in range(4)
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert len(fetched) == 1 and len(set(paths)) == 1 and Path(paths[0]).read_bytes() == b"x" * 1000


def test_broken_records_give_clear_errors(records: Path, tmp_path: Path):
    with pytest.raises(DataError, match="not a records folder"):
        read_records(str(tmp_path))
    index = json.loads((records / "records.json").read_text())
    (tmp_path / "records.json").write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(DataError, match="unfinished"):
        read_records(str(tmp_path))
    (tmp_path / "records.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="is missing"):
        RecordDataset(read_records(str(tmp_path)))[0]


def test_records_are_a_wids_dataset(records: Path, tmp_path: Path):
    """records.json is a wids descriptor and the shards plain webdataset tars: other tools read them."""
    wids = pytest.importorskip("wids")
    dataset = wids.ShardListDataset(str(records / "records.json"), cache_dir=str(tmp_path), transformations=[])
    assert len(dataset) == 230
    sample = dataset[123]
    assert json.loads(sample[".json"].read())["caption"] == "synthetic caption 123"
    ours = RecordDataset(read_records(str(records)))[123]
    assert np.array_equal(np.load(sample[".image.npy"]), ours["input"])


@pytest.mark.slow
def test_two_processes_stream_one_epoch_and_see_every_sample_once(records: Path, tmp_path: Path):
    command = [*two_cpu_processes()[:-1], "tests.stream_epoch", str(records), str(tmp_path / "seen"), "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / "seen" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["steps"] == 23  # 230 samples / (2 processes x batch 5)
    first, second = seen[0]["indices"], seen[1]["indices"]
    assert len(first) == len(second) == 115
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(230))
