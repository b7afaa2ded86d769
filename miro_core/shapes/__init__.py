"""Shapes world: an offline procedural image-caption world whose properties can be measured."""
