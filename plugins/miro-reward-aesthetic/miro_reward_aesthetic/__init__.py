"""The LAION improved aesthetic predictor as a MIRO reward plugin."""
