"""Training records: what ``miro encode`` writes and ``miro train`` streams.

A records folder holds everything a training step reads, per sample, so training never decodes an
image, never runs the autoencoder or the text encoder, and never holds the dataset in memory::

    RECORDS/records.json                 format, model input kind and shape, autoencoder, text encoder,
                                         score columns, shard list (also a wids dataset descriptor)
    RECORDS/empty_caption.safetensors    tokens and mask of the empty caption (text dropout, negatives)
    RECORDS/shards/<name>.tar            one webdataset tar per input shard, samples in source order
    RECORDS/shards/<name>.index.npy      data offset and size of each member (the reader needs no scan)
    RECORDS/shards/<name>.scores.parquet key, caption and raw scores of each record (``miro bins fit RECORDS``)
    RECORDS/shards/<name>.json           its sample count, size and latent sums (written last)

Each sample of a shard is ``NNNNNN.image.npy`` (uint8 pixels, C x S x S) or ``NNNNNN.latent.npy``
(float16 latents), ``NNNNNN.tokens.npy`` (float16, L x D), ``NNNNNN.mask.npy`` (bool, L) and
``NNNNNN.json`` (source key and shard, caption, raw reward scores). Raw scores, not levels: bins
can be refitted without re-encoding.

Modules: :mod:`.layout` (names and the index), :mod:`.writer` (``miro encode`` side),
:mod:`.reader` (the map-style dataset over wids' indexed tar reader, collation, the DataLoader),
:mod:`.order` (the seeded, resumable order in which training visits the samples). The data layer reads
in one direction: ``encode`` -> ``records.writer``; ``train`` -> ``records.reader``; nothing here
imports the training or encoding stages.
"""
