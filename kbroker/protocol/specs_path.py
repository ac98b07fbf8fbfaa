"""Where the machine-readable protocol descriptions live (the repository's protocol_specs/)."""

from pathlib import Path

SPECS_DIR = Path(__file__).resolve().parents[2] / "protocol_specs"
