"""Transactions over the wire with exact requests: the error codes Kafka answers, markers,
last stable offsets and the aborted-transaction list."""

from __future__ import annotations

import time


from kbroker.protocol import messages
from kbroker.protocol.errors import ErrorCode
from kbroker.protocol.records import Record, build_batch, iter_batches
from tests.wire import WireClient

E = ErrorCode



def create(client: WireClient, topic: str, partitions: int = 2) -> str:
    request = messages.CreateTopicsRequest
    client.request("CreateTopics", 7, timeout_ms=5000, topics=[
        request.CreatableTopic(name=topic, num_partitions=partitions, replication_factor=1)])
    return topic


def init(client, txn_id, timeout_ms=60_000, version=4, **fields):
    return client.request("InitProducerId", version, transactional_id=txn_id,
                          transaction_timeout_ms=timeout_ms, **fields)


def add(client, txn_id, pid, epoch, partitions, version=3) -> dict:
    topic_type = messages.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    response = client.request(
        "AddPartitionsToTxn", version, v3_and_below_transactional_id=txn_id,
        v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=[topic_type(name=t, partitions=p) for t, p in by_topic.items()])
    return {(t.name, p.partition_index): p.partition_error_code
            for t in response.results_by_topic_v3_and_below for p in t.results_by_partition}


def end(client, txn_id, pid, epoch, commit, version=3) -> ErrorCode:
    return client.request("EndTxn", version, transactional_id=txn_id, producer_id=pid,
                          producer_epoch=epoch, committed=commit).error_code


def produce(client, topic, partition, batch, transactional_id, version=9):
    request = messages.ProduceRequest
    response = client.request("Produce", version, transactional_id=transactional_id, acks=-1,
                              timeout_ms=5000, topic_data=[request.TopicProduceData(
                                  name=topic, partition_data=[request.PartitionProduceData(
                                      index=partition, records=batch)])])
    return response.responses[0].partition_responses[0]


def txn_batch(pid, epoch, sequence, values, transactional=True) -> bytes:
    now = int(time.time() * 1000)
    return build_batch([Record(timestamp=now, value=v) for v in values], producer_id=pid,
                       producer_epoch=epoch, base_sequence=sequence, transactional=transactional)


def fetch(client, topic, partition, offset=0, committed=True):
    request = messages.FetchRequest
    response = client.request("Fetch", 11, replica_id=-1, max_wait_ms=0, min_bytes=1,
                              max_bytes=1 << 20, isolation_level=int(committed), topics=[
                                  request.FetchTopic(topic=topic, partitions=[request.FetchPartition(
                                      partition=partition, fetch_offset=offset,
                                      partition_max_bytes=1 << 20)])])
    return response.responses[0].partitions[0]


def list_offset(client, topic, partition, committed: bool) -> int:
    request = messages.ListOffsetsRequest
    response = client.request("ListOffsets", 7, replica_id=-1, isolation_level=int(committed),
                              topics=[request.ListOffsetsTopic(name=topic, partitions=[
                                  request.ListOffsetsPartition(partition_index=partition,
                                                               timestamp=-1)])])
    return response.topics[0].partitions[0].offset


def control_batches(records) -> list:
    data = bytes(records or b"")
    return [header for _, header in iter_batches(data) if header.is_control]


# -- InitProducerId --------------------------------------------------------------------------

def test_init_producer_id_validation(client, txn_id):
    assert init(client, txn_id, timeout_ms=900_001).error_code == E.INVALID_TRANSACTION_TIMEOUT
    assert init(client, txn_id, timeout_ms=0).error_code == E.INVALID_TRANSACTION_TIMEOUT
    empty = init(client, "")
    assert (empty.error_code, empty.producer_id, empty.producer_epoch) == (E.INVALID_REQUEST, -1, -1)
    half = init(client, txn_id, producer_id=5, producer_epoch=-1)
    assert half.error_code == E.INVALID_REQUEST


def test_epoch_bumps_fence_older_producers(client, txn_id):
    first = init(client, txn_id)
    assert (first.error_code, first.producer_epoch) == (E.NONE, 0)
    second = init(client, txn_id, version=0)
    assert (second.producer_id, second.producer_epoch) == (first.producer_id, 1)
    topic = create(client, f"fence-{txn_id}")
    pid = first.producer_id
    assert add(client, txn_id, pid, 0, [(topic, 0)]) == {(topic, 0): E.PRODUCER_FENCED}
    assert add(client, txn_id, pid, 0, [(topic, 0)], version=1) == {(topic, 0): E.INVALID_PRODUCER_EPOCH}
    assert end(client, txn_id, pid, 0, True) == E.PRODUCER_FENCED
    assert end(client, txn_id, pid, 0, True, version=1) == E.INVALID_PRODUCER_EPOCH
    # KIP-360: the old producer naming itself is fenced, told so with INVALID_PRODUCER_EPOCH
    # before v4.
    assert init(client, txn_id, version=3, producer_id=pid, producer_epoch=0).error_code == \
        E.INVALID_PRODUCER_EPOCH
    assert init(client, txn_id, version=4, producer_id=pid, producer_epoch=0).error_code == \
        E.PRODUCER_FENCED
    # The current producer continuing after an error gets the next epoch.
    continued = init(client, txn_id, version=4, producer_id=pid, producer_epoch=1)
    assert (continued.error_code, continued.producer_epoch) == (E.NONE, 2)


def test_init_during_a_transaction_aborts_it(client, txn_id):
    topic = create(client, f"init-aborts-{txn_id}")
    first = init(client, txn_id)
    pid = first.producer_id
    assert add(client, txn_id, pid, 0, [(topic, 0)]) == {(topic, 0): E.NONE}
    assert produce(client, topic, 0, txn_batch(pid, 0, 0, [b"x", b"y"]), txn_id).error_code == E.NONE
    assert list_offset(client, topic, 0, committed=True) == 0
    retry = init(client, txn_id)
    assert (retry.error_code, retry.producer_id, retry.producer_epoch) == \
        (E.CONCURRENT_TRANSACTIONS, -1, -1)
    data = fetch(client, topic, 0)
    assert (data.high_watermark, data.last_stable_offset) == (3, 3)
    (marker,) = control_batches(data.records)
    assert (marker.producer_id, marker.producer_epoch) == (pid, 1)  # the fencing epoch
    assert [(t.producer_id, t.first_offset) for t in data.aborted_transactions] == [(pid, 0)]
    again = init(client, txn_id)
    assert (again.error_code, again.producer_epoch) == (E.NONE, 2)
    late = produce(client, topic, 0, txn_batch(pid, 0, 2, [b"zombie"]), txn_id)
    assert late.error_code == E.INVALID_PRODUCER_EPOCH


# -- AddPartitionsToTxn, produce checks --------------------------------------------------------

def test_add_partitions_errors(client, txn_id):
    topic = create(client, f"add-{txn_id}")
    assert add(client, txn_id, 1, 0, [(topic, 0)]) == {(topic, 0): E.INVALID_PRODUCER_ID_MAPPING}
    meta = init(client, txn_id)
    pid = meta.producer_id
    assert add(client, txn_id, pid + 1, 0, [(topic, 0)]) == {(topic, 0): E.INVALID_PRODUCER_ID_MAPPING}
    assert add(client, "", pid, 0, [(topic, 0)]) == {(topic, 0): E.INVALID_REQUEST}
    assert add(client, txn_id, pid, 0, [(topic, 0), (topic, 9), ("no-such-topic", 0)]) == {
        (topic, 0): E.OPERATION_NOT_ATTEMPTED, (topic, 9): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("no-such-topic", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    assert add(client, txn_id, pid, 0, [(topic, 0), ("__consumer_offsets", 0)]) == {
        (topic, 0): E.OPERATION_NOT_ATTEMPTED, ("__consumer_offsets", 0): E.TOPIC_AUTHORIZATION_FAILED}
    assert end(client, txn_id, pid, 0, True) == E.INVALID_TXN_STATE  # nothing was added


def test_add_partitions_v4_batches_and_verifies(client, txn_id):
    topic = create(client, f"add-v4-{txn_id}")
    pid = init(client, txn_id).producer_id
    request = messages.AddPartitionsToTxnRequest
    topics = [request.AddPartitionsToTxnTopic(name=topic, partitions=[0, 1])]

    def send(verify_only: bool, transactional_id=txn_id):
        response = client.request("AddPartitionsToTxn", 4, transactions=[
            request.AddPartitionsToTxnTransaction(
                transactional_id=transactional_id, producer_id=pid, producer_epoch=0,
                verify_only=verify_only, topics=topics)])
        (result,) = response.results_by_transaction
        assert (response.error_code, result.transactional_id) == (E.NONE, transactional_id)
        return {(t.name, p.partition_index): p.partition_error_code
                for t in result.topic_results for p in t.results_by_partition}

    assert send(True) == {(topic, 0): E.TRANSACTION_ABORTABLE, (topic, 1): E.TRANSACTION_ABORTABLE}
    assert add(client, txn_id, pid, 0, [(topic, 0)]) == {(topic, 0): E.NONE}
    assert send(True) == {(topic, 0): E.NONE, (topic, 1): E.TRANSACTION_ABORTABLE}
    assert send(False) == {(topic, 0): E.NONE, (topic, 1): E.NONE}
    assert send(True, "someone-else") == {(topic, 0): E.INVALID_PRODUCER_ID_MAPPING,
                                          (topic, 1): E.INVALID_PRODUCER_ID_MAPPING}
    assert end(client, txn_id, pid, 0, False) == E.NONE


def test_produce_checks_transactional_batches(client, txn_id):
    topic = create(client, f"produce-checks-{txn_id}")
    pid = init(client, txn_id).producer_id
    assert add(client, txn_id, pid, 0, [(topic, 0)]) == {(topic, 0): E.NONE}
    batch = txn_batch(pid, 0, 0, [b"a"])
    assert produce(client, topic, 0, batch, None).error_code == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert produce(client, topic, 1, batch, txn_id).error_code == E.INVALID_TXN_STATE
    assert produce(client, topic, 1, batch, txn_id, version=11).error_code == E.TRANSACTION_ABORTABLE
    assert produce(client, topic, 0, batch, "other-id").error_code == E.INVALID_PRODUCER_ID_MAPPING
    assert produce(client, topic, 0, txn_batch(pid, 3, 0, [b"a"]), txn_id).error_code == \
        E.INVALID_PRODUCER_EPOCH
    ok = produce(client, topic, 0, batch, txn_id)
    assert (ok.error_code, ok.base_offset) == (E.NONE, 0)
    plain = produce(client, topic, 0, txn_batch(pid, 0, 1, [b"b"], transactional=False), txn_id)
    assert plain.error_code == E.INVALID_TXN_STATE  # non-transactional write mid-transaction
    assert end(client, txn_id, pid, 0, True) == E.NONE
    assert produce(client, topic, 0, txn_batch(pid, 0, 1, [b"c"]), txn_id).error_code == \
        E.INVALID_TXN_STATE  # the partition left the transaction with its marker


# -- EndTxn, markers, LSO -------------------------------------------------------------------

def test_commit_and_abort_markers_lso_and_aborted_list(client, txn_id):
    topic = create(client, f"markers-{txn_id}")
    pid = init(client, txn_id).producer_id
    assert add(client, txn_id, pid, 0, [(topic, 0), (topic, 1)]) == \
        {(topic, 0): E.NONE, (topic, 1): E.NONE}
    assert produce(client, topic, 0, txn_batch(pid, 0, 0, [b"c1", b"c2"]), txn_id).error_code == E.NONE
    assert list_offset(client, topic, 0, committed=True) == 0
    assert list_offset(client, topic, 0, committed=False) == 2
    ongoing = fetch(client, topic, 0)
    assert (ongoing.high_watermark, ongoing.last_stable_offset) == (2, 0)
    assert not ongoing.records  # nothing below the LSO yet
    assert end(client, txn_id, pid, 0, True) == E.NONE
    assert end(client, txn_id, pid, 0, True) == E.NONE  # a retry
    assert end(client, txn_id, pid, 0, False) == E.INVALID_TXN_STATE
    assert list_offset(client, topic, 0, committed=True) == 3
    for partition in (0, 1):  # a marker even where nothing was written
        data = fetch(client, topic, partition)
        assert data.last_stable_offset == data.high_watermark
        (marker,) = control_batches(data.records)
        assert marker.producer_id == pid

    assert add(client, txn_id, pid, 0, [(topic, 0)]) == {(topic, 0): E.NONE}
    assert produce(client, topic, 0, txn_batch(pid, 0, 2, [b"a1"]), txn_id).error_code == E.NONE
    assert end(client, txn_id, pid, 0, False) == E.NONE
    assert end(client, txn_id, pid, 0, True) == E.INVALID_TXN_STATE
    data = fetch(client, topic, 0)
    assert (data.high_watermark, data.last_stable_offset) == (5, 5)
    assert [(t.producer_id, t.first_offset) for t in data.aborted_transactions] == [(pid, 3)]
    assert fetch(client, topic, 0, offset=4).aborted_transactions[0].first_offset == 3  # its marker
    assert fetch(client, topic, 0, offset=5).aborted_transactions == []
    assert not fetch(client, topic, 0, committed=False).aborted_transactions


def test_end_txn_errors(client, txn_id):
    assert end(client, txn_id, 1, 0, True) == E.INVALID_PRODUCER_ID_MAPPING
    assert end(client, "", 1, 0, True) == E.INVALID_REQUEST
    pid = init(client, txn_id).producer_id
    assert end(client, txn_id, pid, 0, True) == E.INVALID_TXN_STATE
    assert end(client, txn_id, pid, 0, False) == E.INVALID_TXN_STATE
    assert end(client, txn_id, pid + 1, 0, False) == E.INVALID_PRODUCER_ID_MAPPING


# -- offsets in transactions -------------------------------------------------------------------

def _txn_offset_commit(client, txn_id, pid, epoch, group, topic, offset, version=3):
    request = messages.TxnOffsetCommitRequest
    response = client.request("TxnOffsetCommit", version, transactional_id=txn_id, group_id=group,
                              producer_id=pid, producer_epoch=epoch, topics=[
                                  request.TxnOffsetCommitRequestTopic(name=topic, partitions=[
                                      request.TxnOffsetCommitRequestPartition(
                                          partition_index=0, committed_offset=offset)])])
    return response.topics[0].partitions[0].error_code


def _committed(client, group, topic, require_stable=False):
    request = messages.OffsetFetchRequest
    response = client.request("OffsetFetch", 7, group_id=group, require_stable=require_stable,
                              topics=[request.OffsetFetchRequestTopic(name=topic,
                                                                      partition_indexes=[0])])
    partition = response.topics[0].partitions[0]
    return partition.error_code, partition.committed_offset


def test_transactional_offsets_visible_only_on_commit(client, txn_id):
    topic = create(client, f"offsets-{txn_id}")
    group = f"group-{txn_id}"
    pid = init(client, txn_id).producer_id
    assert _txn_offset_commit(client, txn_id, pid, 0, group, topic, 5) == E.INVALID_TXN_STATE
    add_offsets = client.request("AddOffsetsToTxn", 3, transactional_id=txn_id, producer_id=pid,
                                 producer_epoch=0, group_id=group)
    assert add_offsets.error_code == E.NONE
    assert _txn_offset_commit(client, txn_id, pid, 0, "", topic, 5) == E.INVALID_GROUP_ID
    assert _txn_offset_commit(client, txn_id, pid, 1, group, topic, 5) == E.INVALID_PRODUCER_EPOCH
    assert _txn_offset_commit(client, txn_id, pid, 0, group, topic, 5) == E.NONE
    assert _committed(client, group, topic) == (E.NONE, -1)
    assert _committed(client, group, topic, require_stable=True) == (E.UNSTABLE_OFFSET_COMMIT, -1)
    describe = client.request("DescribeTransactions", 0, transactional_ids=[txn_id])
    (state,) = describe.transaction_states
    assert state.transaction_state == "Ongoing"
    assert [(t.topic, t.partitions) for t in state.topics] == [("__consumer_offsets", [0])]
    assert end(client, txn_id, pid, 0, True) == E.NONE
    assert _committed(client, group, topic) == (E.NONE, 5)

    assert client.request("AddOffsetsToTxn", 0, transactional_id=txn_id, producer_id=pid,
                          producer_epoch=0, group_id=group).error_code == E.NONE
    assert _txn_offset_commit(client, txn_id, pid, 0, group, topic, 9, version=0) == E.NONE
    assert end(client, txn_id, pid, 0, False) == E.NONE
    assert _committed(client, group, topic) == (E.NONE, 5)
    assert client.request("AddOffsetsToTxn", 1, transactional_id=txn_id, producer_id=pid,
                          producer_epoch=7, group_id=group).error_code == E.INVALID_PRODUCER_EPOCH


# -- admin APIs ----------------------------------------------------------------------------------

def test_describe_list_transactions_and_producers(client, txn_id):
    topic = create(client, f"admin-{txn_id}")
    meta = init(client, txn_id, timeout_ms=45_000)
    pid = meta.producer_id
    assert add(client, txn_id, pid, 0, [(topic, 1)]) == {(topic, 1): E.NONE}
    assert produce(client, topic, 1, txn_batch(pid, 0, 0, [b"v"]), txn_id).error_code == E.NONE

    described = client.request("DescribeTransactions", 0, transactional_ids=[txn_id, "unknown", ""])
    mine, unknown, empty = described.transaction_states
    assert (mine.error_code, mine.transaction_state, mine.producer_id, mine.producer_epoch,
            mine.transaction_timeout_ms) == (E.NONE, "Ongoing", pid, 0, 45_000)
    assert mine.transaction_start_time_ms > 0
    assert [(t.topic, t.partitions) for t in mine.topics] == [(topic, [1])]
    assert unknown.error_code == E.TRANSACTIONAL_ID_NOT_FOUND
    assert empty.error_code == E.INVALID_REQUEST

    listed = client.request("ListTransactions", 1, state_filters=["Ongoing", "Nope"],
                            producer_id_filters=[pid], duration_filter=-1)
    assert listed.error_code == E.NONE and listed.unknown_state_filters == ["Nope"]
    assert [(t.transactional_id, t.producer_id, t.transaction_state)
            for t in listed.transaction_states] == [(txn_id, pid, "Ongoing")]
    assert client.request("ListTransactions", 1, state_filters=[], producer_id_filters=[pid],
                          duration_filter=3_600_000).transaction_states == []
    assert client.request("ListTransactions", 0, state_filters=["CompleteCommit"],
                          producer_id_filters=[pid]).transaction_states == []

    request = messages.DescribeProducersRequest
    producers = client.request("DescribeProducers", 0, topics=[
        request.TopicRequest(name=topic, partition_indexes=[1, 7]),
        request.TopicRequest(name="missing-topic", partition_indexes=[0]),
        request.TopicRequest(name="bad/name", partition_indexes=[0])])
    found, missing, bad = producers.topics
    active, absent = found.partitions
    (state,) = active.active_producers
    assert (state.producer_id, state.producer_epoch, state.last_sequence,
            state.current_txn_start_offset) == (pid, 0, 0, 0)
    assert absent.error_code == E.UNKNOWN_TOPIC_OR_PARTITION
    assert (absent.error_message, missing.partitions[0].error_code,
            missing.partitions[0].error_message) == \
        (None, E.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition.")
    assert bad.partitions[0].error_code == E.INVALID_TOPIC_EXCEPTION
    assert "illegal" in bad.partitions[0].error_message
    assert end(client, txn_id, pid, 0, True) == E.NONE
    after = client.request("DescribeTransactions", 0, transactional_ids=[txn_id])
    assert after.transaction_states[0].transaction_state == "CompleteCommit"
    assert after.transaction_states[0].topics == []
