"""The generated codecs: their shape (merged fixed-width runs) and their debuggability."""

from __future__ import annotations

import linecache
import re
import traceback

from kbroker.protocol import messages
from kbroker.protocol.codegen import build_decoder, build_encoder


def generated_source(fn) -> str:
    return "".join(linecache.getlines(fn.__code__.co_filename))


def test_fixed_width_runs_share_one_struct():
    # ProduceRequest v3 partition: int32 index and the int32 records length in one unpack.
    source = generated_source(build_decoder(messages.ProduceRequest, 3))
    assert re.search(r"o\.index, n\d+ = K\d+\.unpack_from\(buf, p\)\n\s+p \+= 8\n", source)
    # FetchResponse v12 partition: five fixed fields in one pack call.
    source = generated_source(build_encoder(messages.FetchResponse, 12))
    assert re.search(
        r"b \+= K\d+\.pack\(o\.partition_index, o\.error_code, o\.high_watermark, "
        r"o\.last_stable_offset, o\.log_start_offset\)", source
    )


def test_one_function_per_struct():
    source = generated_source(build_decoder(messages.ProduceRequest, 9))
    names = re.findall(r"^def (\w+)\(", source, re.M)
    assert names == ["d_ProduceRequest", "d_TopicProduceData", "d_PartitionProduceData"]


def test_tracebacks_show_generated_lines():
    encoder = build_encoder(messages.InitProducerIdResponse, 0)
    try:
        encoder(messages.InitProducerIdResponse(producer_id="not an int"), bytearray(), [])
    except Exception as e:
        text = "".join(traceback.format_exception(e))
    assert "kbroker.protocol.codegen e_InitProducerIdResponse v0" in text
    assert ".pack(o.throttle_time_ms, o.error_code, o.producer_id, o.producer_epoch)" in text
