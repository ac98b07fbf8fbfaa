"""`kbroker topic create|list|describe|delete|alter-config|add-partitions`."""

from __future__ import annotations

from kbroker.client import admin
from kbroker.commands.common import cluster_command, key_values, print_json, print_table


def add_parser(commands) -> None:
    action = cluster_command(commands, "topic", "create, list, describe, alter and delete topics")
    create = action("create", _create, "create a topic")
    create.add_argument("name")
    create.add_argument("-p", "--partitions", type=int, default=-1,
                        help="default: the broker's num.partitions")
    create.add_argument("-r", "--replication-factor", type=int, default=-1,
                        help="default: the broker's default.replication.factor")
    create.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a topic config, by its Kafka name (repeatable)")

    action("list", _list, "list the topics", json=True)

    describe = action("describe", _describe,
                      "partitions, leaders, replicas, ISR, offsets and non-default configs", json=True)
    describe.add_argument("name")
    describe.add_argument("--all-configs", action="store_true",
                          help="show every config, defaults included")

    delete = action("delete", _delete, "delete a topic")
    delete.add_argument("name")

    alter = action("alter-config", _alter_config, "set or remove topic configs")
    alter.add_argument("name")
    alter.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                       help="set a config (repeatable)")
    alter.add_argument("-d", "--delete", action="append", default=[], metavar="KEY",
                       help="return a config to its default (repeatable)")

    grow = action("add-partitions", _add_partitions, "raise a topic's partition count")
    grow.add_argument("name")
    grow.add_argument("-p", "--partitions", type=int, required=True,
                      help="the new total number of partitions")


async def _create(cluster, args) -> None:
    await admin.create_topic(cluster, args.name, args.partitions, args.replication_factor,
                             key_values(args.config))
    print(f"created topic {args.name}")


async def _list(cluster, args) -> None:
    topics = await admin.list_topics(cluster)
    if args.json:
        print_json([{"name": t.name, "partitions": len(t.partitions), "internal": t.internal,
                     "topic_id": t.topic_id} for t in topics])
        return
    print_table([{"topic": t.name, "partitions": len(t.partitions),
                  "internal": "yes" if t.internal else ""} for t in topics],
                ["topic", "partitions", "internal"])


async def _describe(cluster, args) -> None:
    info = await admin.describe_topic(cluster, args.name, args.all_configs)
    if args.json:
        print_json(info)
        return
    print(f"topic {info.name}  id {info.topic_id}  partitions {len(info.partitions)}"
          f"{'  internal' if info.internal else ''}")
    print_table([{"partition": p.partition, "leader": p.leader,
                  "replicas": ",".join(map(str, p.replicas)), "isr": ",".join(map(str, p.isr)),
                  "earliest": p.earliest, "latest": p.latest} for p in info.partitions],
                ["partition", "leader", "replicas", "isr", "earliest", "latest"])
    if info.configs:
        print()
        print_table([{"config": k, "value": v} for k, v in sorted(info.configs.items())],
                    ["config", "value"])


async def _delete(cluster, args) -> None:
    await admin.delete_topic(cluster, args.name)
    print(f"deleted topic {args.name}")


async def _alter_config(cluster, args) -> None:
    await admin.alter_topic_configs(cluster, args.name, key_values(args.config), args.delete)
    print(f"altered configs of topic {args.name}")


async def _add_partitions(cluster, args) -> None:
    await admin.add_partitions(cluster, args.name, args.partitions)
    print(f"topic {args.name} now has {args.partitions} partitions")
