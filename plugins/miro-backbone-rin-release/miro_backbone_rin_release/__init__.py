"""The released MIRO network's RIN backbone (miro-t2i 0.1.4), as a MIRO backbone plugin."""
