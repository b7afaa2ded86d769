"""DiT backbone for MIRO: adaLN-Zero transformer blocks with cross-attention to the conditioning tokens."""
