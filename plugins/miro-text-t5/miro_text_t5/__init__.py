"""T5 / FLAN-T5 text encoder for MIRO (transformers T5EncoderModel, local weights only)."""
