"""MIRO reward plugin ``shapes-aesthetic``: contrast and colourfulness of shapes-world images."""

from miro_reward_shapes_aesthetic.reward import ShapesAesthetic

__all__ = ["ShapesAesthetic"]
