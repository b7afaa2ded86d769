"""MIRO reward plugin ``shapes-alignment``: fraction of a caption's claims that hold in the image."""

from miro_reward_shapes_alignment.reward import ShapesAlignment

__all__ = ["ShapesAlignment"]
