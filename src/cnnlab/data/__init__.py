"""Data: sources, decoding, health check, split manifest, cache and device batches."""
