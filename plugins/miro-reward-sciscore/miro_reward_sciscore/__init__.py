"""SciScore as a MIRO reward plugin."""
