"""`kbroker topic create|list|describe|delete|alter-config|add-partitions`."""

from __future__ import annotations

from kbroker.client import admin
from kbroker.commands.common import add_bootstrap, add_json, key_values, print_json, print_table, run


def add_parser(commands) -> None:
    topic = commands.add_parser("topic", help="create, list, describe, alter and delete topics")
    actions = topic.add_subparsers(dest="topic_command", required=True)

    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("-p", "--partitions", type=int, default=1)
    create.add_argument("-r", "--replication-factor", type=int, default=1)
    create.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a topic config, by its Kafka name (repeatable)")
    create.set_defaults(topic_handler=_create)

    listing = actions.add_parser("list", help="list the topics")
    add_json(listing)
    listing.set_defaults(topic_handler=_list)

    describe = actions.add_parser(
        "describe", help="partitions, leaders, replicas, ISR, offsets and non-default configs")
    describe.add_argument("name")
    describe.add_argument("--all-configs", action="store_true",
                          help="show every config, defaults included")
    add_json(describe)
    describe.set_defaults(topic_handler=_describe)

    delete = actions.add_parser("delete", help="delete a topic")
    delete.add_argument("name")
    delete.set_defaults(topic_handler=_delete)

    alter = actions.add_parser("alter-config", help="set or remove topic configs")
    alter.add_argument("name")
    alter.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                       help="set a config (repeatable)")
    alter.add_argument("-d", "--delete", action="append", default=[], metavar="KEY",
                       help="return a config to its default (repeatable)")
    alter.set_defaults(topic_handler=_alter_config)

    grow = actions.add_parser("add-partitions", help="raise a topic's partition count")
    grow.add_argument("name")
    grow.add_argument("-p", "--partitions", type=int, required=True,
                      help="the new total number of partitions")
    grow.set_defaults(topic_handler=_add_partitions)

    for action in (create, listing, describe, delete, alter, grow):
        add_bootstrap(action)
    topic.set_defaults(handler=lambda args: run(args.topic_handler, args))


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
