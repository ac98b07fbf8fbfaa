"""Where the machine-readable protocol descriptions live.

In a source checkout: the repository's top-level protocol_specs/ (the source). In an installed
wheel: the copy setup.py puts beside the code, kbroker/protocol_specs/.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_INSTALLED, _SOURCE = _PACKAGE / "protocol_specs", _PACKAGE.parent / "protocol_specs"
SPECS_DIR = _INSTALLED if _INSTALLED.is_dir() else _SOURCE
