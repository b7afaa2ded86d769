"""HPSv2 as a MIRO reward plugin."""
