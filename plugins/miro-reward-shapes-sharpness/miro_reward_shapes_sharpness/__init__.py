"""MIRO reward plugin ``shapes-sharpness``: edge acuity of shapes-world images, penalised by noise."""

from miro_reward_shapes_sharpness.reward import ShapesSharpness

__all__ = ["ShapesSharpness"]
