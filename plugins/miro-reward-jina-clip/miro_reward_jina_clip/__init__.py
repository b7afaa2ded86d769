"""jina-clip-v2 CLIP score as a MIRO reward plugin."""
