"""VQAScore (CLIP-FlanT5) as a MIRO reward plugin."""
