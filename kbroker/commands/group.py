"""`kbroker group list|describe|reset-offsets|delete` (consumer groups, classic protocol)."""

from __future__ import annotations

from kbroker.client import ClientError, admin
from kbroker.commands.common import cluster_command, print_json, print_table, timestamp_ms


def add_parser(commands) -> None:
    action = cluster_command(commands, "group", "list, describe, reset and delete consumer groups")
    action("list", _list, "list the groups", json=True)
    describe = action("describe", _describe, "state, members, assignments, committed offsets and lag",
                      json=True)
    describe.add_argument("group")

    reset = action("reset-offsets", _reset_offsets, "move an inactive group's committed offsets",
                   json=True)
    reset.add_argument("group")
    reset.add_argument("--topic", required=True)
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true")
    target.add_argument("--to-latest", action="store_true")
    target.add_argument("--to-offset", type=int, metavar="N")
    target.add_argument("--to-time", metavar="ISO8601")
    reset.add_argument("--dry-run", action="store_true", help="show the new offsets, change nothing")

    delete = action("delete", _delete, "delete an empty group and its offsets")
    delete.add_argument("group")


async def _list(cluster, args) -> None:
    groups = await admin.list_groups(cluster)
    if args.json:
        print_json(groups)
    else:
        print_table(groups, ["group", "protocol_type", "state"])


async def _describe(cluster, args) -> None:
    info = await admin.describe_group(cluster, args.group)
    if args.json:
        print_json(info)
        return
    print(f"group {info.group}  state {info.state}  protocol {info.protocol_type}"
          f"{'/' + info.protocol if info.protocol else ''}  members {len(info.members)}")
    if info.members:
        print()
        print_table([{"member": m.member_id, "client_id": m.client_id, "host": m.host,
                      "assignment": " ".join(f"{t}:{','.join(map(str, ps))}"
                                             for t, ps in sorted(m.assignment.items()))}
                     for m in info.members], ["member", "client_id", "host", "assignment"])
    if info.offsets:
        print()
        print_table([{"topic": o.topic, "partition": o.partition, "committed": o.committed,
                      "latest": o.latest, "lag": o.lag} for o in info.offsets],
                    ["topic", "partition", "committed", "latest", "lag"])


async def _reset_offsets(cluster, args) -> None:
    state = (await admin.describe_group(cluster, args.group)).state
    if state not in ("Empty", "Dead"):
        raise ClientError(f"offsets of group {args.group} can only be reset while it is inactive; "
                          f"it is {state}")
    partitions = sorted(await cluster.leaders(args.topic))
    if args.to_offset is not None:
        earliest = await admin.list_offsets(cluster, args.topic,
                                            dict.fromkeys(partitions, admin.EARLIEST))
        latest = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, admin.LATEST))
        # Like kafka-consumer-groups.sh, an offset outside the log is moved to its nearest end.
        targets = {p: min(max(args.to_offset, earliest[p]), latest[p]) for p in partitions}
    else:
        when = (admin.EARLIEST if args.to_earliest else admin.LATEST if args.to_latest
                else timestamp_ms(args.to_time))
        targets = await admin.list_offsets(cluster, args.topic, dict.fromkeys(partitions, when))
        if args.to_time:
            latest = await admin.list_offsets(cluster, args.topic,
                                              dict.fromkeys(partitions, admin.LATEST))
            targets = {p: o if o >= 0 else latest[p] for p, o in targets.items()}
    if not args.dry_run:
        await admin.commit_offsets(cluster, args.group, args.topic, targets)
    rows = [{"topic": args.topic, "partition": p, "new_offset": o} for p, o in sorted(targets.items())]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["topic", "partition", "new_offset"])
        if args.dry_run:
            print("(dry run: nothing committed)")


async def _delete(cluster, args) -> None:
    await admin.delete_group(cluster, args.group)
    print(f"deleted group {args.group}")
