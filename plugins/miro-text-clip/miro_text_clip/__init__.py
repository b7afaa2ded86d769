"""CLIP text encoder for MIRO (transformers CLIPTextModel, local weights only)."""
