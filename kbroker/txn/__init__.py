"""The transaction coordinator: its state machine (state.py), log records, trio layer."""
