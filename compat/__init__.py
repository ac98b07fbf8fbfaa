"""kbroker's client compatibility matrix: real Kafka clients run scripted scenarios against a broker.

Layout (why it is split this way):
- scenarios.py   each scenario written once, client-agnostic, as calls to agent operations + exact checks
- clients/       one driver per client: a small process ("agent") that performs those operations
                 with that client's public API (node/agent.js for kafkajs, clients/kcat.py wraps kcat)
- agent.py       the JSON-lines protocol between a cell and its agents (so any language can be a driver)
- cell.py        one (scenario, client) run in its own process, so the runner can kill it on timeout
- runner.py      starts brokers, runs cells in parallel, prints the matrix, writes REPORT.md/.json
"""
