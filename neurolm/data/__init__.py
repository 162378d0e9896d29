"""EEG data: signal processing, corpus readers, Parquet sample shards, token layout and tasks (no Ray here)."""
