"""`kbroker ctl faults|cluster|broker|leader`: the broker's HTTP control API (`serve --http-port`):
fault injection, and the simulated cluster of `serve --brokers N` (see kbroker/http/cluster_control.py)."""

from __future__ import annotations

import os
import sys

from kbroker.commands.common import add_json, print_json, print_table
from kbroker.control import DEFAULT_URL, Control, ControlError

URL_VARIABLE = "KBROKER_HTTP"
_COLUMNS = ["id", "api", "error", "times", "hits", "client_id", "broker", "delay_ms", "disconnect"]
_BROKER_COLUMNS = ["id", "host", "port", "up"]
_PARTITION_COLUMNS = ["topic", "partition", "leader", "leader_epoch", "replicas", "isr"]


def add_parser(commands) -> None:
    ctl = commands.add_parser("ctl", help="control a running broker over its HTTP port (faults, cluster)")
    ctl.add_argument("--http", default=os.environ.get(URL_VARIABLE, DEFAULT_URL), metavar="URL",
                     help=f"the broker's --http-port URL (default ${URL_VARIABLE} or {DEFAULT_URL})")
    areas = ctl.add_subparsers(dest="ctl_area", required=True)
    faults = areas.add_parser("faults", help="inject errors, delays and disconnections")
    actions = faults.add_subparsers(dest="faults_command", required=True)

    add = actions.add_parser("add", help="add a fault; prints its id")
    add.add_argument("--api", required=True, help="the Kafka API name, e.g. Produce, Fetch")
    add.add_argument("--error", help="answer with this Kafka error, e.g. NOT_LEADER_OR_FOLLOWER")
    add.add_argument("--times", type=int, help="fire this many times (default: until deleted)")
    add.add_argument("--client-id", help="only requests of this client id")
    add.add_argument("--broker", type=int, metavar="NODE_ID", help="only requests to this broker")
    add.add_argument("--delay-ms", type=int, default=0, help="hold the answer this long")
    add.add_argument("--disconnect", action="store_true", help="close the connection instead")
    add.set_defaults(ctl_handler=_add)

    listing = actions.add_parser("list", help="the faults and how often each fired")
    add_json(listing)
    listing.set_defaults(ctl_handler=_list)

    delete = actions.add_parser("delete", help="delete a fault")
    delete.add_argument("id")
    delete.set_defaults(ctl_handler=_delete)
    _add_cluster_parsers(areas)
    ctl.set_defaults(handler=_run)


def _add_cluster_parsers(areas) -> None:
    cluster = areas.add_parser("cluster", help="the brokers, and each partition's leader and ISR")
    add_json(cluster)
    cluster.set_defaults(ctl_handler=_cluster)

    broker = areas.add_parser("broker", help="stop or start a broker of `serve --brokers N`")
    actions = broker.add_subparsers(dest="broker_command", required=True)
    for action, handler, text in (("stop", _stop, "stop: its listener closes, leaders and coordinators move"),
                                  ("start", _start, "start again: it listens and rejoins the ISRs")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("node_id", type=int, metavar="NODE_ID")
        parser.set_defaults(ctl_handler=handler)

    leader = areas.add_parser("leader", help="move a partition's leadership to a replica in its ISR")
    leader.add_argument("topic")
    leader.add_argument("partition", type=int)
    leader.add_argument("node_id", type=int, metavar="NODE_ID")
    leader.set_defaults(ctl_handler=_move_leader)


def _run(args) -> int:
    try:
        args.ctl_handler(Control(args.http), args)
    except ControlError as exc:
        print(f"kbroker: {exc}", file=sys.stderr)
        return 1
    return 0


def _add(control: Control, args) -> None:
    print(control.add_fault(args.api, args.error, times=args.times, client_id=args.client_id,
                            broker=args.broker, delay_ms=args.delay_ms, disconnect=args.disconnect))


def _list(control: Control, args) -> None:
    faults = control.faults()
    if args.json:
        print_json(faults)
        return
    print_table([{name: "" if fault[name] is None else fault[name] for name in _COLUMNS}
                 for fault in faults], _COLUMNS)


def _delete(control: Control, args) -> None:
    control.delete_fault(args.id)
    print(f"deleted fault {args.id}")


def _cluster(control: Control, args) -> None:
    cluster = control.cluster()
    if args.json:
        print_json(cluster)
        return
    print_table(cluster["brokers"], _BROKER_COLUMNS)
    print()
    print_table([{"topic": topic, **partition,
                  "replicas": ",".join(map(str, partition["replicas"])),
                  "isr": ",".join(map(str, partition["isr"]))}
                 for topic, partitions in sorted(cluster["topics"].items()) for partition in partitions],
                _PARTITION_COLUMNS)


def _stop(control: Control, args) -> None:
    control.stop_broker(args.node_id)
    print(f"stopped broker {args.node_id}")


def _start(control: Control, args) -> None:
    control.start_broker(args.node_id)
    print(f"started broker {args.node_id}")


def _move_leader(control: Control, args) -> None:
    partition = control.move_leader(args.topic, args.partition, args.node_id)
    print(f"{args.topic}-{args.partition}: leader {partition['leader']}, "
          f"leader epoch {partition['leader_epoch']}")
