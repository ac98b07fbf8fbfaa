#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine (run as root), idempotently:
# the package with its test extra (Python clients, codecs, pytest), Debian's kcat (librdkafka 2.0.2,
# old protocol versions), Debian's chromium (headless, for the web console tests), Debian's sarama
# (Go, for the --as-version tests) and kafkajs
# (npm, compat/node). Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import kbroker, kafka, aiokafka, confluent_kafka, pykafka, pytest, pytest_trio, cramjam, lz4, zstandard, snappy, prometheus_client, ruff, mypy" \
        2>/dev/null || ! pip show kbroker >/dev/null 2>&1; then
    pip install -q -e '.[test]'
fi

if ! command -v kcat >/dev/null 2>&1; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat
fi

if ! command -v chromium >/dev/null 2>&1; then  # renders the web console in its tests
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

if [ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ]; then  # an old sarama (--as-version tests)
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-github-shopify-sarama-dev
fi

if ! command -v node >/dev/null 2>&1; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi

if [ ! -d compat/node/node_modules/kafkajs ]; then
    (cd compat/node && npm ci --no-audit --no-fund --loglevel=error)
fi
