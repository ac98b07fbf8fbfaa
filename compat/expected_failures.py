"""The one list of expected failures: (scenario, client) -> the honest reason it cannot pass yet.

A key may name a variant as a third item: its name ("sasl_ssl/2.8"), its security ("sasl_ssl") or
its release ("2.8"); without one it holds in every variant. A listed cell that fails shows as
XFAIL; one that passes shows as XPASS, and with --strict (as CI runs it) an XPASS fails the run so
that this list never claims more than is true.
"""

EXPECTED_FAILURES: dict[tuple[str, ...], str] = {
    # --wide only. sarama picks request versions from its Config.Version without asking the broker.
    # Apache Kafka 4.0 no longer serves OffsetCommit v0-1 either (KIP-896).
    ("commit_and_resume", "sarama"): "sarama 1.22 commits offsets with OffsetCommit v1; kbroker serves v2 and "
                                     "up (as Kafka 4.0 does) and closes the connection, so the commit is lost",
    ("admin_groups", "sarama"): "sarama 1.22 commits offsets with OffsetCommit v1; kbroker serves v2 and up (as "
                                "Kafka 4.0 does) and closes the connection, so no committed offsets are listed",
    ("admin_topics", "sarama"): "sarama 1.22 describes topic configs with DescribeConfigs v0; kbroker serves v1 "
                                "and up (as Kafka 4.0 does) and closes the connection",
    # --as-version 2.8: Kafka 2.8 serves DescribeCluster v0 only (v1 added EndpointType, KIP-919).
    **{(scenario, "kafka-python", "2.8"): "kafka-python 3.0.12's describe_cluster reads endpoint_type, which "
       "DescribeCluster v0 (all Kafka 2.8 serves) lacks: KeyError, as against Kafka 2.8"
       for scenario in ("metadata", "admin_topics", "error_unknown_topic")},
    # --wide only. kafka-python 2.0's producer has retries=0 by default (3.x retries).
    **{(scenario, "kafka-python@2.0.2"): "kafka-python 2.0's producer defaults to retries=0, so the first "
                                         "NOT_LEADER_OR_FOLLOWER fails the send, as it would against Kafka"
       for scenario in ("retriable_errors", "cluster_leader_change")},
    # librdkafka before 2.6.1 repeats its own nonce in SCRAM's client-final message (fixed by
    # librdkafka PR 4895); Kafka 4.x checks the nonce exactly, as RFC 5802 asks, and so does kbroker.
    **{("*", client, f"sasl_ssl:{mechanism}"): f"{client}'s librdkafka ({librdkafka}, before 2.6.1) repeats "
       "its nonce in SCRAM's client-final message, which Kafka 4.x refuses as kbroker does (PLAIN works)"
       for client, librdkafka in (("kcat", "2.0.2"), ("confluent-kafka@2.0.2", "2.0.2"),
                                  ("confluent-kafka@2.3.0", "2.3.0"))
       for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")},
    # --wide only: clients that do not find the new group coordinator after its broker stopped.
    ("cluster_coordinator_failover", "sarama"): "when the stop meets its JoinGroup (most runs; it passes when "
        "it does not), sarama 1.22 keeps its cached coordinator (newSession returns the connection error without "
        "RefreshCoordinator), so it dials the stopped broker forever",
    ("cluster_coordinator_failover", "platformatic-kafka@1.35.0"): "its consumer gives up ('joinGroup failed "
        "4 times' or 'fetch failed 4 times': its retries, default 3, exhausted) after the coordinator's broker stopped",
    # --wide only. @platformatic/kafka 1.35.0's classic members declare ConsumerProtocolSubscription
    # v1 but leave its OwnedPartitions out (14 bytes for one topic), which Kafka cannot read either.
    ("kip848_mixed_protocols", "platformatic-kafka@1.35.0"): "its classic member's subscription says v1 "
        "without the v1 OwnedPartitions field, so the group cannot be converted: the consumer-protocol "
        "member gets GROUP_ID_NOT_FOUND, as from Kafka",
    ("kip848_range_and_growth", "platformatic-kafka@1.35.0"): "its fetch loop throws TypeError (reading "
        "'leader') when the broker assigns a partition its cached metadata does not have yet (after "
        "CreatePartitions), and the agent process dies",
}


def expected_failure(scenario: str, client: str, variant, mechanism: str = "") -> str | None:
    """The reason a cell is listed as expected to fail in this variant, or None. A key's scenario
    may be "*" (every scenario) and its variant tag "sasl_ssl:<mechanism>"."""
    tags = [variant.name, variant.security, variant.as_version]
    if variant.security != "plaintext":
        tags.append(f"{variant.security}:{mechanism}")
    for name in (scenario, "*"):
        for key in [(name, client, tag) for tag in tags] + [(name, client)]:
            if key in EXPECTED_FAILURES:
                return EXPECTED_FAILURES[key]
    return None
