"""Client drivers. Each one is an agent (see compat/agent.py) answering these operations with its
client's public API; a scenario only ever calls these, so it is written once for all clients.

hello()                                  -> {"client", "version", "detail", "features": [...]}
metadata()                               -> {"brokers": [[host, port]], "topics": {name: partitions}}
create_topics(topics=[{name, partitions, config, replicas (default 1)}]) / delete_topics(topics=[names])
describe_configs(topic, keys)            -> {key: value}
create_partitions(topic, count)          (count: the new total)
list_groups() -> [group ids]; describe_group(group) -> {"state", "members": count}
group_offsets(group, topic) -> [[topic, partition, committed offset]]; delete_groups(groups)
alter_configs(topic, config={k: v})
produce(topic, records, options)         -> [offset or null per record], in order
      options: compression, idempotent, max_request_size, timeout_ms, pace_ms (one record per
      request, pace_ms apart, with one producer)
consume(topic, partition, offset, count, timeout_ms, options) -> records (assign mode, no group)
      offset: int | "earliest" | "latest"; options: reset, isolation, fetch_max_wait_ms
list_offsets(topic, partition, spec)     -> offset or null; spec: "earliest" | "latest" | timestamp ms
transaction(topic, txid, steps=[{records, end: "commit"|"abort", offsets?}], options)
      offsets: {"group": g, "offsets": [[topic, partition, offset]]} sent to the transaction
member_start(group, topics, options) / member_state() -> {"assigned", "records", "error"}
member_commit(offsets=[[topic, partition, offset]]) / member_close()
      options: auto_commit, reset, assignor ("roundrobin" or default), session_timeout_ms
watch_start(topic, partition, offset, options) / watch_state() -> {"ready", "records" (with arrived)}
set_group_config(group, config={k: v})   (the GROUP config resource)
share_consume(group, topic, count, ack, timeout_ms) -> [[offset, value, delivery count]]
      a share consumer that acknowledges each record it gets with ack ("accept", "release",
      "reject") until it has `count` records or the time is up

Features named in hello() tell a scenario up front what the client cannot do (N/A): "admin",
"timestamps", "idempotence", "transactions", "commit_offsets", "compression:<codec>",
"share_consumer" (KIP-932 share groups).
"""
