"""An exactly-once consume-transform-produce loop (confluent-kafka), run as a child process by
tests/test_transactions_clients.py so that it can be killed with SIGKILL mid-transaction.

    python -m tests.transactions_processor BOOTSTRAP SOURCE SINK GROUP TRANSACTIONAL_ID

Each transaction copies a batch of records (values upper-cased) and commits the consumed
offsets with them. It prints "open" once a transaction's records are in the broker and
"committed N" after each commit, so the test knows when a kill lands mid-transaction.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, Producer


def main(bootstrap: str, source: str, sink: str, group: str, transactional_id: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "linger.ms": 5})
    producer.init_transactions(30)  # fences a previous instance and aborts its transaction
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "group.instance.id": transactional_id,
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
    })
    consumer.subscribe([source])
    while True:
        batch = [m for m in consumer.consume(20, 0.2) if not m.error()]
        if not batch:
            continue
        producer.begin_transaction()
        for message in batch:
            producer.produce(sink, key=message.key(), value=message.value().upper())
        producer.flush(30)
        print("open", flush=True)
        time.sleep(0.05)  # a window for the test's SIGKILL
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        print("committed", len(batch), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
