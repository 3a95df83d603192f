"""Stage 7, serialize: the user's `save` and `load` (the bytes on disk are `flexrt.format`'s)."""
