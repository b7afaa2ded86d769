"""Code shared by the MIRO paper reward plugins: life cycle, checkpoints, tokenizers, preprocessing.

Registers nothing and holds no weights. Importing it (or ``base``) imports no heavy library.
"""
