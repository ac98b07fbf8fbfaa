"""CPU per request of the Produce and Fetch handlers in-process, without sockets or a load
generator, so that two trees can be compared on a busy machine:

    python tests/perf/bench_handlers.py                         # this tree
    python tests/perf/bench_handlers.py --tree /tmp/kb-before   # another checkout of kbroker

Each run opens a broker (`--brokers N`: simulating N) on a temporary data dir, appends
100-record batches (acks=1) to one partition and fetches them back, timing `handle_produce` / `handle_fetch` with
time.process_time over many calls; prints microseconds per call (median of the rounds).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--brokers", type=int, default=1,
                        help="simulate N brokers (the requests go to the partition's leader)")
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.tree))
    import trio

    from kbroker.api.context import ClientSession, RequestContext
    from kbroker.api.fetch import handle_fetch
    from kbroker.api.produce import handle_produce
    from kbroker.broker import Broker
    from kbroker.config import Config
    from kbroker.protocol.messages import FetchRequest, ProduceRequest
    from kbroker.protocol.records import Record, build_batch

    produced, fetched = [], []
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"log.dirs": data_dir}
        if args.brokers > 1:
            settings["simulated.brokers"] = str(args.brokers)
        broker = Broker(Config(settings))
        broker.storage.create_topic("bench", 1)
        node_id = broker.cluster.leader("bench", 0) if args.brokers > 1 else broker.node_id
        fields = {f.name for f in dataclasses.fields(ClientSession)}
        session = ClientSession(peer="127.0.0.1:1", listener="PLAINTEXT", security_protocol="PLAINTEXT",
                                advertised=("127.0.0.1", 9092), authenticated=True,
                                **({"node_id": node_id} if "node_id" in fields else {}))
        batch = bytes(build_batch([Record(timestamp=int(time.time() * 1000), value=b"x" * 100)] * 100))
        produce = ProduceRequest(transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
            ProduceRequest.TopicProduceData(name="bench", partition_data=[
                ProduceRequest.PartitionProduceData(index=0, records=batch)])])

        def fetch_request(offset: int) -> FetchRequest:
            return FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                                isolation_level=0, session_id=0, session_epoch=-1, topics=[
                                    FetchRequest.FetchTopic(topic="bench", partitions=[
                                        FetchRequest.FetchPartition(partition=0, fetch_offset=offset,
                                                                    partition_max_bytes=1 << 20)])])

        async def run() -> None:
            for _ in range(args.rounds):
                started = time.process_time()
                for _ in range(args.calls):
                    await handle_produce(RequestContext(broker, session, 9, 1, "bench"), produce)
                produced.append((time.process_time() - started) / args.calls * 1e6)
                requests = [fetch_request(offset * 100) for offset in range(args.calls)]
                started = time.process_time()
                for request in requests:
                    await handle_fetch(RequestContext(broker, session, 12, 1, "bench"), request)
                fetched.append((time.process_time() - started) / args.calls * 1e6)

        trio.run(run)
        broker.close()
    import kbroker
    print(f"kbroker from {os.path.dirname(os.path.dirname(kbroker.__file__))}")
    print(f"produce 100x100B, acks=1: {statistics.median(produced):.1f} us CPU per request "
          f"(rounds {', '.join(f'{v:.1f}' for v in produced)})")
    print(f"fetch one batch:          {statistics.median(fetched):.1f} us CPU per request "
          f"(rounds {', '.join(f'{v:.1f}' for v in fetched)})")


if __name__ == "__main__":
    main()
