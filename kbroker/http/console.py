"""The web console: topics, a message browser, consumer groups, connected clients, broker configs.

Server-rendered HTML (kbroker.http.html) with a few lines of JavaScript to switch how values are
shown; nothing is loaded from elsewhere, so it works without network access. Pages read the
broker through the Kafka protocol (HttpApp.cluster); a Kafka error becomes an error page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape

from kbroker.client import ClientError, admin
from kbroker.client.consumer import read_range, timestamp_from_iso
from kbroker.http.html import link, page, table
from kbroker.http.server import Request, Response
from kbroker.protocol.errors import KafkaError

BROWSE_DEFAULT, BROWSE_MAX = 20, 500  # records per partition in the message browser
_NUMERIC = {"partitions", "partition", "leader", "earliest", "latest", "records", "bytes",
            "committed", "lag", "offset", "members"}


def add_routes(routes, app) -> None:
    for path, render in (("/", _topics), ("/topic", _topic), ("/messages", _messages),
                         ("/groups", _groups), ("/group", _group), ("/clients", _clients),
                         ("/configs", _configs)):
        routes.add("GET", path, _page_handler(app, render))


def _page_handler(app, render):
    async def handle(request: Request) -> Response:
        cluster_id = app.broker.identity.cluster_id
        try:
            async with app.cluster() as cluster:
                title, body = await render(app, cluster, request.query)
            return Response(page(title, body, cluster_id))
        except KafkaError as exc:
            return _error_page(f"{exc.code.name}: {exc.message or ''}", 404, cluster_id)
        except ValueError as exc:  # a query parameter that is missing or not a number
            return _error_page(str(exc), 400, cluster_id)
        except ClientError as exc:
            return _error_page(str(exc), 503, cluster_id)
    return handle


def _error_page(text: str, status: int, cluster_id: str) -> Response:
    return Response(page("Error", f'<p class="error">{escape(text)}</p>', cluster_id), status)


def _time(ms: int) -> str:
    if ms < 0:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def _topics(app, cluster, query) -> tuple[str, str]:
    topics = await admin.list_topics(cluster)
    partitions = [(t.name, p.partition) for t in topics for p in t.partitions]
    ends = await admin.list_offsets_of(cluster, dict.fromkeys(partitions, admin.LATEST))
    starts = await admin.list_offsets_of(cluster, dict.fromkeys(partitions, admin.EARLIEST))
    sizes = await admin.log_sizes(cluster)
    rows = []
    for topic in topics:
        keys = [(topic.name, p.partition) for p in topic.partitions]
        rows.append([link("/topic", topic.name, name=topic.name), len(topic.partitions),
                     sum(ends[k] - starts[k] for k in keys), sum(sizes.get(k, 0) for k in keys),
                     "internal" if topic.internal else "",
                     link("/messages", "browse", topic=topic.name)])
    broker = app.broker
    summary = (f"<p>Node {broker.node_id}, listener {escape(app.bootstrap)}, "
               f"{len(topics)} topics, {len(app.clients())} open connections.</p>")
    return "Topics", summary + table(
        ["topic", "partitions", "records", "bytes", "kind", "messages"], rows, _NUMERIC,
        raw={"topic", "messages"})


async def _topic(app, cluster, query) -> tuple[str, str]:
    name = _required(query, "name")
    info = await admin.describe_topic(cluster, name)
    sizes = await admin.log_sizes(cluster)
    configs = await admin.describe_configs(cluster, admin.TOPIC_RESOURCE, name)
    partitions = table(
        ["partition", "leader", "replicas", "isr", "earliest", "latest", "records", "bytes",
         "messages"],
        [[p.partition, p.leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)),
          p.earliest, p.latest, p.latest - p.earliest, sizes.get((name, p.partition), 0),
          link("/messages", "browse", topic=name, partition=p.partition)]
         for p in info.partitions], _NUMERIC, raw={"messages"})
    config_rows = table(["config", "value", "source"], [
        [c.name, "(sensitive)" if c.sensitive else c.value,
         c.source] for c in configs if c.source == "DYNAMIC_TOPIC_CONFIG"]
        + [[c.name, c.value, c.source] for c in configs if c.source != "DYNAMIC_TOPIC_CONFIG"])
    return f"Topic {name}", (
        f"<p>Id {escape(info.topic_id)}. {link('/messages', 'Browse messages', topic=name)}</p>"
        f"<h2>Partitions</h2>{partitions}<h2>Configs</h2>"
        f"<p class=muted>Set on the topic first, then the defaults it inherits.</p>{config_rows}")


def _required(query, name: str) -> str:
    value = query.get(name, "")
    if not value:
        raise ValueError(f"missing query parameter {name!r}")
    return value


def _browse_form(topic: str, query) -> str:
    def field(name, label, kind="text", size=""):
        value = escape(query.get(name, ""))
        return f'<label>{label} <input name="{name}" type="{kind}" value="{value}" {size}></label>'
    selected = query.get("format", "text")
    options = "".join(f'<option value="{f}"{" selected" if f == selected else ""}>{f}</option>'
                      for f in ("text", "json", "hex"))
    return (f'<form class=inline method=get action="/messages">'
            f'<input type=hidden name=topic value="{escape(topic)}">'
            f'{field("partition", "partition", "number")}{field("latest", "latest N", "number")}'
            f'{field("offset", "or from offset", "number")}'
            f'{field("time", "or from time (ISO 8601)")}'
            f'<label>values as <select id=format name=format>{options}</select></label>'
            f'<button type=submit>Show</button></form>')


def _value_cell(data: bytes | None, shown: str) -> str:
    """A value in all three formats, `shown` visible; the page's script switches them."""
    if data is None:
        return '<span class=muted>null</span>'
    text = data.decode("utf-8", errors="replace")
    try:
        as_json = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        as_json = "(not JSON) " + text
    return "".join(f'<pre data-format="{name}"{"" if name == shown else " hidden"}>'
                   f'{escape(rendering)}</pre>' for name, rendering in (
                       ("text", text), ("json", as_json), ("hex", data.hex(" "))))


def _key_text(data: bytes | None) -> str:
    if data is None:
        return '<span class=muted>null</span>'
    try:
        return escape(data.decode("utf-8"))
    except UnicodeDecodeError:
        return escape("0x" + data.hex())


async def _messages(app, cluster, query) -> tuple[str, str]:
    topic = _required(query, "topic")
    partitions = sorted(await cluster.leaders(topic))
    if query.get("partition", "") != "":
        wanted = int(query["partition"])
        if wanted not in partitions:
            raise ValueError(f"topic {topic} has no partition {wanted}")
        partitions = [wanted]
    ends = await admin.list_offsets(cluster, topic, dict.fromkeys(partitions, admin.LATEST))
    earliest = await admin.list_offsets(cluster, topic, dict.fromkeys(partitions, admin.EARLIEST))
    limit = min(int(query.get("latest") or BROWSE_DEFAULT), BROWSE_MAX)
    if query.get("offset", "") != "":
        starts = {p: max(int(query["offset"]), earliest[p]) for p in partitions}
    elif query.get("time"):
        found = await admin.list_offsets(cluster, topic, dict.fromkeys(
            partitions, timestamp_from_iso(query["time"])))
        starts = {p: o if o >= 0 else ends[p] for p, o in found.items()}
    else:
        starts = {p: max(ends[p] - limit, earliest[p]) for p in partitions}
    records = await read_range(cluster, topic, starts, ends, limit)
    shown = query.get("format") if query.get("format") in ("text", "json", "hex") else "text"
    rows = [[r.partition, r.offset, _time(r.timestamp), _key_text(r.key),
             "<br>".join(f"{escape(k)}={_key_text(v)}" for k, v in r.headers),
             _value_cell(r.value, shown)] for r in records]
    body = (_browse_form(topic, query) +
            f"<p>{len(records)} records (at most {limit} per partition), "
            f"{link('/topic', 'topic ' + topic, name=topic)}.</p>" +
            table(["partition", "offset", "timestamp", "key", "headers", "value"], rows,
                  _NUMERIC, raw={"key", "headers", "value"}))
    return f"Messages of {topic}", body


async def _groups(app, cluster, query) -> tuple[str, str]:
    rows = []
    for listed in await admin.list_groups(cluster):
        info = await admin.describe_group(cluster, listed["group"])
        rows.append([link("/group", info.group, name=info.group), info.state,
                     info.protocol_type, info.protocol, len(info.members),
                     sum(o.lag or 0 for o in info.offsets)])
    return "Consumer groups", table(
        ["group", "state", "protocol type", "protocol", "members", "lag"], rows, _NUMERIC,
        raw={"group"})


async def _group(app, cluster, query) -> tuple[str, str]:
    info = await admin.describe_group(cluster, _required(query, "name"))
    members = table(["member", "client id", "host", "instance id", "assignment"], [
        [m.member_id, m.client_id, m.host, m.instance_id or "",
         " ".join(f"{t}:{','.join(map(str, ps))}" for t, ps in sorted(m.assignment.items()))]
        for m in info.members])
    offsets = table(["topic", "partition", "committed", "latest", "lag"], [
        [link("/topic", o.topic, name=o.topic), o.partition, o.committed, o.latest, o.lag]
        for o in info.offsets], _NUMERIC, raw={"topic"})
    return f"Group {info.group}", (
        f"<p>State <b>{escape(info.state)}</b>, protocol {escape(info.protocol_type)}"
        f"{'/' + escape(info.protocol) if info.protocol else ''}.</p>"
        f"<h2>Members</h2>{members}<h2>Committed offsets and lag</h2>{offsets}")


async def _clients(app, cluster, query) -> tuple[str, str]:
    connections = table(["peer", "listener", "software", "version", "principal"], [
        [c["peer"], c["listener"], c["software_name"], c["software_version"], c["principal"] or ""]
        for c in sorted(app.clients(), key=lambda c: c["peer"])])
    usage = table(["client software", "APIs and versions used"], [
        [client, "; ".join(f"{api} {','.join(map(str, sorted(versions)))}"
                           for api, versions in sorted(apis.items()))]
        for client, apis in sorted(app.broker.api_usage.seen.items())])
    return "Clients", (f"<h2>Open connections</h2>{connections}"
                       f"<h2>API versions each client software used</h2>{usage}")


async def _configs(app, cluster, query) -> tuple[str, str]:
    configs = await admin.describe_configs(cluster, admin.BROKER_RESOURCE, str(app.broker.node_id))
    return "Broker configs", table(["config", "value", "source", "read-only"], [
        [c.name, "(sensitive)" if c.sensitive else c.value, c.source, "yes" if c.read_only else ""]
        for c in configs])
