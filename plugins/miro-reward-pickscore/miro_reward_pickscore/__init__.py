"""PickScore as a MIRO reward plugin."""
