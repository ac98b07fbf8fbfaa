"""DescribeQuorum, answered as a single-node KRaft quorum answers it: this node is the leader and
the only voter of `__cluster_metadata`, caught up at the broker's metadata offset, with no
observers. Any other partition is UNKNOWN_TOPIC_OR_PARTITION, as Kafka's raft client says.
"""

from __future__ import annotations

from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.messages import DescribeQuorumRequest, DescribeQuorumResponse

METADATA_TOPIC = "__cluster_metadata"

Response = DescribeQuorumResponse
_NOT_HOSTED = "This server does not host this topic-partition."


def _asks_for_metadata_log(request) -> bool:
    return (len(request.topics) == 1 and request.topics[0].topic_name == METADATA_TOPIC
            and len(request.topics[0].partitions) == 1
            and request.topics[0].partitions[0].partition_index == 0)


@serves("DescribeQuorum", 0, 2)
async def handle_describe_quorum(ctx: RequestContext,
                                 request: DescribeQuorumRequest) -> DescribeQuorumResponse:
    broker = ctx.broker
    if not _asks_for_metadata_log(request):
        return Response(error_code=ErrorCode.NONE, topics=[
            Response.TopicData(topic_name=topic.topic_name, partitions=[
                Response.PartitionData(partition_index=partition.partition_index,
                                       error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                       error_message=_NOT_HOSTED)
                for partition in topic.partitions])
            for topic in request.topics])
    now = broker.clock.now_ms()
    offset = broker.metadata_offset
    host, port = ctx.session.advertised
    voter = Response.ReplicaState(replica_id=broker.node_id, log_end_offset=offset.value,
                                  last_fetch_timestamp=now, last_caught_up_timestamp=now)
    return Response(error_code=ErrorCode.NONE, topics=[
        Response.TopicData(topic_name=METADATA_TOPIC, partitions=[
            Response.PartitionData(partition_index=0, error_code=ErrorCode.NONE,
                                   leader_id=broker.node_id, leader_epoch=offset.leader_epoch,
                                   high_watermark=offset.value, current_voters=[voter],
                                   observers=[])])],
        nodes=[Response.Node(node_id=broker.node_id, listeners=[
            Response.Listener(name=ctx.session.listener, host=host, port=port)])])
