"""Shapes world: an offline procedural image-caption world whose properties can be measured.

Modules, one concept each (import the one you need; this package imports nothing heavy by itself):

- :mod:`~miro_core.shapes.world`: ``generate`` / ``make_sample``, the dataset (``ShapesSample``).
- :mod:`~miro_core.shapes.scene`: sampling a caption plan and placing objects that satisfy it.
- :mod:`~miro_core.shapes.render`: anti-aliased drawing (and ``place`` / ``draw_objects`` for hand-made scenes).
- :mod:`~miro_core.shapes.degrade`: blur, noise, low contrast, washed-out colour.
- :mod:`~miro_core.shapes.captions`: the caption grammar, ``parse_caption``, kinds, ``benchmark_prompts``.
- :mod:`~miro_core.shapes.detect`: ``detect_shapes`` (colour segmentation and shape fitting).
- :mod:`~miro_core.shapes.verify`: ``verify(image, caption)`` with per-claim results.
- :mod:`~miro_core.shapes.palette`, :mod:`~miro_core.shapes.geometry`, :mod:`~miro_core.shapes.noise`,
  :mod:`~miro_core.shapes.pixels`, :mod:`~miro_core.shapes.probes`: shared building blocks.

See docs/shapes-world.md.
"""
