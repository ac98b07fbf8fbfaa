"""kbroker/protocol/error_codes.py is generated from protocol_specs/errors.json and up to date."""

import subprocess
import sys
from pathlib import Path

from kbroker.protocol.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[1]


def test_generated_error_codes_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_error_codes.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_names_and_numbers():
    assert ErrorCode.CORRUPT_MESSAGE == 2 and ErrorCode(-1) is ErrorCode.UNKNOWN_SERVER_ERROR
