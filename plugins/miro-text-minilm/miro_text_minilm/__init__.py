"""MiniLM text encoder plugin for MIRO (offline default)."""
