"""`kbroker quota describe|alter`: client quotas (KIP-546), as `kafka-configs.sh` sets them for
the users, clients and ips entity types."""

from __future__ import annotations

from kbroker.client import admin
from kbroker.commands.common import cluster_command, fail, key_values, print_json, print_table

_ENTITY_TYPES = (("user", "user"), ("client-id", "client_id"), ("ip", "ip"))  # type, option's dest


def add_parser(commands) -> None:
    action = cluster_command(commands, "quota", "describe and alter client quotas")
    describe = action("describe", _describe, "the quotas of an entity (default: of every entity)",
                      json=True)
    alter = action("alter", _alter, "set or remove an entity's quotas")
    alter.add_argument("--add", action="append", default=[], metavar="KEY=VALUE",
                       help="set a quota, e.g. producer_byte_rate=1048576, controller_mutation_rate=10, "
                            "connection_creation_rate=20 (repeatable)")
    alter.add_argument("--delete", action="append", default=[], metavar="KEY", help="remove a quota (repeatable)")

    for parser in (describe, alter):
        for kind, dest in _ENTITY_TYPES:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(f"--{kind}", dest=dest, metavar="NAME", help=f"the {kind} entity NAME")
            group.add_argument(f"--{kind}-default", dest=dest, action="store_const", const="",
                               help=f"the default {kind} entity")


def _entity(args) -> dict[str, str | None]:
    """Entity type -> name; None names the type's default entity ('' from --X-default)."""
    return {kind: getattr(args, dest) or None for kind, dest in _ENTITY_TYPES
            if getattr(args, dest) is not None}


def _entity_text(entity: dict[str, str | None]) -> str:
    return " ".join(f"{kind}={name if name is not None else '<default>'}" for kind, name in entity.items())


async def _describe(cluster, args) -> None:
    found = await admin.describe_client_quotas(cluster, _entity(args))
    if args.json:
        print_json([{"entity": entity, "quotas": values} for entity, values in found])
        return
    print_table([{"entity": _entity_text(entity),
                  "quotas": " ".join(f"{key}={value:g}" for key, value in sorted(values.items()))}
                 for entity, values in found], ["entity", "quotas"])


async def _alter(cluster, args) -> None:
    entity = _entity(args)
    if not entity:
        fail("name an entity: --user, --client-id or --ip (or their -default)")
    values: dict[str, float | None] = dict.fromkeys(args.delete)
    for key, text in key_values(args.add).items():
        try:
            values[key] = float(text)
        except ValueError:
            fail(f"not a number: {key}={text}")
    if not values:
        fail("nothing to change: give --add KEY=VALUE or --delete KEY")
    await admin.alter_client_quotas(cluster, entity, values)
    print(f"altered the quotas of {_entity_text(entity)}")
