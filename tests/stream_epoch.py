"""Run under ``accelerate launch``: stream one epoch of a records folder as training does; write the indices.

Used by tests/test_records.py: each process builds the same loader as ``Trainer._loader`` (2 worker
processes each) and writes the global indices it received to ``OUT/rank-N.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(records: str, out: str, batch: int) -> None:
    from accelerate import PartialState

    from miro_core.records.layout import read_records
    from miro_core.records.order import ShuffledOrder, StepSampler
    from miro_core.records.reader import Collate, RecordDataset, make_loader

    state = PartialState(cpu=True)
    info = read_records(records)
    steps = info.samples // (batch * state.num_processes)
    order = ShuffledOrder(info.shard_sizes, seed=3, block_shards=2)
    sampler = StepSampler(order, batch, state.process_index, state.num_processes, stop_step=steps)
    loader = make_loader(RecordDataset(info), sampler, Collate([], None), workers=2)
    seen = [int(i) for b in loader for i in b["index"]]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank-{state.process_index}.json").write_text(json.dumps({"steps": steps, "indices": seen}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
