"""ImageReward as a MIRO reward plugin."""
