"""The everyday command line tools (`kbroker topic|produce|consume|group|quota`), on kbroker.client,
and `kbroker ctl` on the broker's HTTP control API (kbroker.control).

Each module adds its subcommand with `add_parser(commands)`, which sets the function that runs
it as the parser's `handler` default.
"""

from kbroker.commands import consume, ctl, group, produce, quota, topic

MODULES = (topic, produce, consume, group, quota, ctl)


def add_parsers(commands) -> None:
    for module in MODULES:
        module.add_parser(commands)
