"""The pieces of the annotation engine (``miro annotate``), one concept per module.

- :mod:`~miro_core.annotation.config`: the run's options, checked before any data is read, and exit codes;
- :mod:`~miro_core.annotation.batches`: shards -> decoded (and reward-prepared) batches, in DataLoader workers;
- :mod:`~miro_core.annotation.scoring`: a batch -> one reward's scores, with the contract enforced;
- :mod:`~miro_core.annotation.store`: the output folder: parts, tables, resume state, leftovers;
- :mod:`~miro_core.annotation.summary`: run records and the folder's totals across resumes and ranks;
- :mod:`~miro_core.annotation.report`: the exit status a run ends with, and why.

Around them: :mod:`miro_core.data.shards` (reading tar shards, faults and duplicate keys),
:mod:`miro_core.data.decode` (capped decoding), :mod:`miro_core.data.lock` (one writer per folder) and
:mod:`miro_core.reward_contract` (what a reward must return; read-only image views).

The run loop that ties them together is :mod:`miro_core.annotate`.
"""
