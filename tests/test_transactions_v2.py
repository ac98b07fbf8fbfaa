"""Transactions v2 (KIP-890 part 2) over the wire, as a Kafka 4.2 client drives them once the
broker finalizes transaction.version 2: Produce v12+ and TxnOffsetCommit v5+ add their partition
to the transaction, EndTxn v5 bumps the epoch of every transaction it ends."""

from __future__ import annotations

import uuid


from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from tests.test_transactions_wire import control_batches, create, fetch, init, produce, txn_batch

E = ErrorCode



def end_v5(client, txn_id, pid, epoch, commit):
    response = client.request("EndTxn", 5, transactional_id=txn_id, producer_id=pid,
                              producer_epoch=epoch, committed=commit)
    return response.error_code, response.producer_id, response.producer_epoch


def described(client, txn_id):
    (state,) = client.request("DescribeTransactions", 0, transactional_ids=[txn_id]).transaction_states
    return state.transaction_state, state.producer_epoch, sorted(
        (t.topic, p) for t in state.topics for p in t.partitions)


def test_transaction_version_2_is_finalized(client):
    response = client.request("ApiVersions", 4, client_software_name="wire",
                              client_software_version="1")
    supported = {f.name: (f.min_version, f.max_version) for f in response.supported_features}
    finalized = {f.name: (f.min_version_level, f.max_version_level)
                 for f in response.finalized_features}
    assert supported["transaction.version"] == (0, 2)
    assert finalized["transaction.version"] == (2, 2)


def test_produce_v12_joins_the_transaction_and_end_txn_v5_bumps_the_epoch(client, txn_id):
    topic = create(client, f"tv2-{txn_id}")
    pid = init(client, txn_id, version=5).producer_id

    # No AddPartitionsToTxn: the produce adds its partition.
    first = produce(client, topic, 0, txn_batch(pid, 0, 0, [b"a", b"b"]), txn_id, version=12)
    assert first.error_code == E.NONE
    assert produce(client, topic, 1, txn_batch(pid, 0, 0, [b"c"]), txn_id, version=12).error_code \
        == E.NONE
    assert described(client, txn_id) == ("Ongoing", 0, [(topic, 0), (topic, 1)])
    assert fetch(client, topic, 0).records in (b"", None)  # nothing committed yet

    assert end_v5(client, txn_id, pid, 0, True) == (E.NONE, pid, 1)
    assert described(client, txn_id) == ("CompleteCommit", 1, [])
    markers = control_batches(fetch(client, topic, 0, committed=False).records)
    assert [(m.producer_id, m.producer_epoch) for m in markers] == [(pid, 1)]
    assert fetch(client, topic, 0).high_watermark == 3

    # A retry of the same EndTxn (the old epoch) gets the same answer; a new end at the old
    # epoch, or a write with it, is fenced.
    assert end_v5(client, txn_id, pid, 0, True) == (E.NONE, pid, 1)
    assert end_v5(client, txn_id, pid, 0, False)[0] == E.INVALID_TXN_STATE
    stale = produce(client, topic, 0, txn_batch(pid, 0, 2, [b"late"]), txn_id, version=12)
    assert stale.error_code == E.INVALID_PRODUCER_EPOCH

    # The next transaction runs at the new epoch, sequences from 0, and aborts with a bump.
    assert produce(client, topic, 0, txn_batch(pid, 1, 0, [b"d"]), txn_id, version=12).error_code \
        == E.NONE
    assert end_v5(client, txn_id, pid, 1, False) == (E.NONE, pid, 2)
    assert described(client, txn_id) == ("CompleteAbort", 2, [])
    # An abort with nothing added still bumps (the client's abortable-error recovery).
    assert end_v5(client, txn_id, pid, 2, False) == (E.NONE, pid, 3)
    assert end_v5(client, txn_id, pid, 3, True)[0] == E.INVALID_TXN_STATE


def test_produce_v11_still_needs_add_partitions(client, txn_id):
    topic = create(client, f"tv1-{txn_id}")
    pid = init(client, txn_id, version=5).producer_id
    answer = produce(client, topic, 0, txn_batch(pid, 0, 0, [b"a"]), txn_id, version=11)
    assert answer.error_code == E.TRANSACTION_ABORTABLE
    answer = produce(client, topic, 0, txn_batch(pid, 0, 0, [b"a"]), txn_id, version=10)
    assert answer.error_code == E.INVALID_TXN_STATE
    assert described(client, txn_id) == ("Empty", 0, [])


def test_produce_v13_transactional_by_topic_id(client, txn_id):
    topic = create(client, f"tv2-ids-{txn_id}")
    topic_id = client.request("Metadata", 12, topics=[
        messages.MetadataRequest.MetadataRequestTopic(name=topic)]).topics[0].topic_id
    pid = init(client, txn_id, version=5).producer_id
    request = messages.ProduceRequest
    response = client.request("Produce", 13, transactional_id=txn_id, acks=-1, timeout_ms=5000,
                              topic_data=[request.TopicProduceData(topic_id=topic_id, partition_data=[
                                  request.PartitionProduceData(
                                      index=1, records=txn_batch(pid, 0, 0, [b"x"]))])])
    assert response.responses[0].partition_responses[0].error_code == E.NONE
    assert described(client, txn_id) == ("Ongoing", 0, [(topic, 1)])
    assert end_v5(client, txn_id, pid, 0, True) == (E.NONE, pid, 1)


def txn_offset_commit(client, version, txn_id, pid, epoch, group, topic_entry):
    request = messages.TxnOffsetCommitRequest
    response = client.request("TxnOffsetCommit", version, transactional_id=txn_id, group_id=group,
                              producer_id=pid, producer_epoch=epoch, generation_id_or_member_epoch=-1,
                              member_id="", topics=[request.TxnOffsetCommitRequestTopic(
                                  partitions=[request.TxnOffsetCommitRequestPartition(
                                      partition_index=0, committed_offset=7)], **topic_entry)])
    (topic,) = response.topics
    return topic.partitions[0].error_code


def committed(client, group, topic):
    request = messages.OffsetFetchRequest
    response = client.request("OffsetFetch", 9, groups=[request.OffsetFetchRequestGroup(
        group_id=group, topics=[request.OffsetFetchRequestTopics(name=topic, partition_indexes=[0])])])
    return response.groups[0].topics[0].partitions[0].committed_offset


def test_txn_offset_commit_v5_joins_the_transaction_and_v6_names_topics_by_id(client, txn_id):
    topic = create(client, f"tv2-offsets-{txn_id}")
    topic_id = client.request("Metadata", 12, topics=[
        messages.MetadataRequest.MetadataRequestTopic(name=topic)]).topics[0].topic_id
    group = f"group-{txn_id}"
    pid = init(client, txn_id, version=5).producer_id
    # v4 needs AddOffsetsToTxn first; v5 adds the group's offsets partition itself.
    assert txn_offset_commit(client, 4, txn_id, pid, 0, group, {"name": topic}) == \
        E.TRANSACTION_ABORTABLE
    assert txn_offset_commit(client, 5, txn_id, pid, 0, group, {"name": topic}) == E.NONE
    state, _, partitions = described(client, txn_id)
    assert state == "Ongoing" and [p[0] for p in partitions] == ["__consumer_offsets"]
    assert txn_offset_commit(client, 6, txn_id, pid, 0, group, {"topic_id": topic_id}) == E.NONE
    assert txn_offset_commit(client, 6, txn_id, pid, 0, group, {"topic_id": uuid.uuid4()}) == \
        E.UNKNOWN_TOPIC_ID
    assert committed(client, group, topic) == -1
    assert end_v5(client, txn_id, pid, 0, True) == (E.NONE, pid, 1)
    assert committed(client, group, topic) == 7
