"""Micro-benchmark of the hot codec paths (run directly; pytest does not collect bench_*.py).

    python tests/perf/bench_codec.py

Times decoding a ProduceRequest v9 frame (header + body) and encoding a FetchResponse v12,
and, when kafka-python is installed, the same work done by its own generated codec.
"""

from __future__ import annotations

import timeit
import uuid

from kbroker.protocol import FileRegion, codec, messages
from kbroker.protocol.records import Record, build_batch

PARTITIONS = 10


def produce_frame() -> bytes:
    P = messages.ProduceRequest
    batch = build_batch([Record(timestamp=1_700_000_000_000 + i, key=b"key-%d" % i, value=b"x" * 100)
                         for i in range(10)])
    request = P(acks=-1, timeout_ms=30000, topic_data=[
        P.TopicProduceData(name="events", partition_data=[
            P.PartitionProduceData(index=i, records=batch) for i in range(PARTITIONS)
        ]),
    ])
    return codec.encode_request(0, 9, 1, "bench-producer", request)[4:]


def fetch_response() -> messages.FetchResponse:
    F = messages.FetchResponse
    return F(throttle_time_ms=0, error_code=0, session_id=12, responses=[
        F.FetchableTopicResponse(topic="events", topic_id=uuid.UUID(int=5), partitions=[
            F.PartitionData(
                partition_index=i, high_watermark=10_000, last_stable_offset=10_000, log_start_offset=0,
                records=FileRegion(3, 4096 * i, 65536) if i % 2 else b"r" * 200,
            )
            for i in range(PARTITIONS)
        ]),
    ])


def bench(label: str, fn, number: int = 20000) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5)) / number
    print(f"{label:<55} {best * 1e6:8.2f} us")
    return best


def decode_produce(frame):
    header, offset = codec.decode_request_header(frame)
    return codec.decode_request(header, frame, offset)


def main() -> None:
    frame = memoryview(produce_frame())
    response = fetch_response()
    print(f"ProduceRequest v9: {len(frame)} bytes, {PARTITIONS} partitions; "
          f"FetchResponse v12: {PARTITIONS} partitions (half FileRegions)")
    bench("kbroker: decode ProduceRequest v9 (header + body)", lambda: decode_produce(frame))
    bench("kbroker: encode FetchResponse v12", lambda: codec.encode_response(1, 12, 7, response))
    try:
        from kafka.protocol.producer import ProduceRequest as KafkaPythonProduce
    except ImportError:
        return
    header_size = codec.decode_request_header(frame)[1]
    body = bytes(frame[header_size:])
    bench("kafka-python: decode ProduceRequest v9 body", lambda: KafkaPythonProduce.decode(body, version=9))


if __name__ == "__main__":
    main()
