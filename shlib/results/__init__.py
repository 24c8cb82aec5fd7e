"""The results format: what collection writes and analysis reads, and nothing else.

    schema     the row schema (one row per module load per trial), its version, statuses, runtime kinds
    store      a run's directory on disk: atomic parts, metadata.json, load_results
"""
