"""The `miro` command line, a thin layer over miro_core."""
