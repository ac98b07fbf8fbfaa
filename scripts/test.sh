#!/usr/bin/env bash
# Install everything the tests need (Python clients, kcat, kafkajs) and run the whole suite,
# including the client compatibility matrix. This is the README's test command and CI's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_test_tools.sh
exec python -m pytest -q -p no:cacheprovider "$@"
