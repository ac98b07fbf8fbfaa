"""The web console rendered by headless Chromium: every page shows what the broker holds.

Screenshots of each page are saved in the test's tmp directory (pytest's --basetemp keeps them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape

import pytest
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from kbroker.testing import running_broker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """A broker with a topic of keyed, JSON, binary and header-carrying records and a group with
    one live member that lags."""
    with running_broker("--http-port", "0", data_dir=tmp_path_factory.mktemp("console")) as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send("orders", key=b"order-1", value=b'{"total": 12, "currency": "EUR"}',
                      headers=[("source", b"web")], partition=0).get(10)
        producer.send("orders", key=b"order-2", value=b"\xff\xfe\x00binary", partition=0).get(10)
        producer.send("orders", key=b"order-3", value=b"plain words", partition=0).get(10)
        consumer = KafkaConsumer("orders", bootstrap_servers=broker.bootstrap, group_id="billing",
                                 client_id="billing-app", enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        while not consumer.assignment():
            consumer.poll(timeout_ms=200)
        consumer.commit({TopicPartition("orders", 0): OffsetAndMetadata(1, None, -1)})
        yield broker
        consumer.close()
        producer.close()


def render(url: str, tmp_path, name: str) -> str:
    """The page's DOM after its scripts ran, as text; a screenshot is saved beside it."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={tmp_path / ('profile-' + name)}",
             "--window-size=1280,900"]
    subprocess.run([*flags, f"--screenshot={tmp_path / (name + '.png')}", url],
                   capture_output=True, timeout=60, check=True)
    assert (tmp_path / (name + ".png")).stat().st_size > 1000
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert "<h1>" in dom, dom
    return dom


def text(dom: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", dom))


def visible_values(dom: str) -> list[str]:
    return [unescape(v) for v in re.findall(r'<pre data-format="\w+">(.*?)</pre>', dom, re.DOTALL)]


def test_topics_page(console, tmp_path):
    page = text(render(console.http + "/", tmp_path, "topics"))
    assert re.search(r"orders\s+1\s+3\s+\d+", page), page  # 1 partition, 3 records, its bytes
    assert "__consumer_offsets" in page


def test_topic_page_shows_partitions_and_configs(console, tmp_path):
    page = text(render(console.http + "/topic?name=orders", tmp_path, "topic"))
    assert re.search(r"\b0\s+1\s+1\s+1\s+0\s+3\s+3\b", page), page  # leader 1, offsets 0..3
    assert "retention.ms" in page and "DEFAULT_CONFIG" in page


def test_message_browser_shows_keys_headers_and_values_as_text_json_and_hex(console, tmp_path):
    dom = render(console.http + "/messages?topic=orders", tmp_path, "messages")
    page = text(dom)
    assert "order-1" in page and "source=web" in page and "order-3" in page
    assert visible_values(dom)[0] == '{"total": 12, "currency": "EUR"}'
    json_dom = render(console.http + "/messages?topic=orders&format=json", tmp_path, "as-json")
    assert visible_values(json_dom)[0] == '{\n  "total": 12,\n  "currency": "EUR"\n}'
    # The script switches the format on the page: the fragment asks for hex.
    hex_dom = render(console.http + "/messages?topic=orders&latest=2#hex", tmp_path, "as-hex")
    assert visible_values(hex_dom) == ["ff fe 00 62 69 6e 61 72 79",
                                       "70 6c 61 69 6e 20 77 6f 72 64 73"]
    from_offset = text(render(console.http + "/messages?topic=orders&offset=2", tmp_path, "offset"))
    assert "order-3" in from_offset and "order-1" not in from_offset


def test_groups_pages_show_members_and_lag(console, tmp_path):
    listing = text(render(console.http + "/groups", tmp_path, "groups"))
    assert re.search(r"billing\s+Stable\s+consumer\s+\w+\s+1\s+2\b", listing), listing
    page = text(render(console.http + "/group?name=billing", tmp_path, "group"))
    assert "billing-app" in page and "orders:0" in page
    assert re.search(r"orders\s+0\s+1\s+3\s+2\b", page), page  # committed 1, latest 3, lag 2


def test_clients_page_shows_software_and_api_versions(console, tmp_path):
    page = text(render(console.http + "/clients", tmp_path, "clients"))
    assert "kafka-python" in page and "3.0.12" in page
    assert re.search(r"kafka-python 3\.0\.12\s+.*Produce \d", page), page


def test_broker_configs_page(console, tmp_path):
    page = text(render(console.http + "/configs", tmp_path, "configs"))
    assert "log.segment.bytes" in page and "STATIC_BROKER_CONFIG" in page


def test_unknown_topic_is_an_error_page(console, tmp_path):
    page = text(render(console.http + "/topic?name=missing", tmp_path, "missing"))
    assert "UNKNOWN_TOPIC_OR_PARTITION" in page
