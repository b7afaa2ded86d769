"""prepare / score_prepared: the CPU half runs on an unloaded, pickled copy (a DataLoader worker's), and
``score`` is exactly ``score_prepared([prepare(...)])``."""

from __future__ import annotations

import pickle

import pytest
from reference_layouts import WRITERS, fx, load_record

IMAGES = ["rgb_37x23.png", "RGBA_50x31.png", "I16_33x29.png", "P_transparent_index_26x26.png", "rgb_1x40.png"]


@pytest.mark.parametrize("reward", sorted(WRITERS))
def test_score_equals_score_prepared_of_worker_prepare(registry, reward, tmp_path):
    options = WRITERS[reward](load_record(reward), tmp_path)
    cls = registry.rewards.get(reward)
    assert cls.prepares_in_workers()
    images = [fx.open_image(fx.IMAGES / name) for name in IMAGES]
    captions = [fx.CAPTIONS[i] for i in (0, 4, 5, 8, 1)]

    worker = pickle.loads(pickle.dumps(registry.rewards.create(reward, options)))  # unloaded, as in a worker
    prepared = [worker.prepare(image, caption) for image, caption in zip(images, captions)]
    assert not worker.loaded
    prepared = pickle.loads(pickle.dumps(prepared))  # what crosses the process boundary

    loaded = registry.rewards.create(reward, options)
    loaded.load("cpu", "float32")
    assert loaded.score(images, captions) == loaded.score_prepared(prepared)
    copy = pickle.loads(pickle.dumps(loaded))
    assert copy.model is None and loaded.model is not None  # a pickled reward never carries the weights
    loaded.options.raw = True
    raw = loaded.score_prepared(prepared)
    loaded.options.raw = False
    assert [loaded.scale(v) for v in raw] == loaded.score_prepared(prepared)
