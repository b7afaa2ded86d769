"""``miro convert``: a released MIRO checkpoint (the authors' layout) -> one of this project's run folders.

The run folder holds the released EMA weights as step 0 (raw and EMA weights alike; there is no optimizer
state), the shipped negative-text embedding, the release's latent statistics (``latent_statistics.json``, in
the sdxl-vae plugin's format, for encoding fine-tuning data) and a ``config.json`` that records where it
came from, so
``miro sample``, ``miro eval``, ``miro serve`` and ``miro train --init-from`` work on it like on any run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from miro_core.errors import ConfigError


def convert_release(
    source: str | Path, out: str | Path, variant: str | None = None, registry: Any = None, force: bool = False
) -> Path:
    """Convert ``source`` (local folder or repo id in the local HF cache, ``variant`` subfolder) into ``out``."""
    import numpy as np

    from miro_core.authors_layout import build_model, load_checkpoint
    from miro_core.run_folder import NEGATIVE_TEXT_FILE, save_checkpoint, write_json_atomic

    if registry is None:
        from miro_core.plugins import get_registry

        registry = get_registry()
    run = Path(out)
    if run.exists() and any(run.iterdir()):
        if not force:
            raise ConfigError(f"{run} is not empty; choose another --out or pass --force to replace it")
        shutil.rmtree(run)
    checkpoint, state = load_checkpoint(source, variant)
    model = build_model(checkpoint, state, registry)
    weights = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    run.mkdir(parents=True, exist_ok=True)
    np.save(run / NEGATIVE_TEXT_FILE, checkpoint.uncond_embedding.numpy())
    # For `miro encode --autoencoder-option statistics=...`: fine-tuning data normalised as the release's.
    write_json_atomic(
        run / "latent_statistics.json",
        {
            "mean": checkpoint.latent_mean,
            "std": checkpoint.latent_std,
            "source": f"released checkpoint {checkpoint.folder}",
        },
    )
    config = checkpoint.run_config()
    config["imported_from"]["variant"] = variant
    write_json_atomic(run / "config.json", config)
    save_checkpoint(run, 0, weights, weights, None, {"converted_from": str(checkpoint.folder)}, keep=1)
    return run
