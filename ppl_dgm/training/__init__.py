"""Training loops (one per backend)."""
