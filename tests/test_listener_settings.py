"""Listener settings, certificate principals and cipher names as units (no socket)."""

from __future__ import annotations

import pytest

from kbroker.config import Config
from kbroker.protocol.errors import KafkaError
from kbroker.security.principal import NoMatchingRule, PrincipalMapper, distinguished_name
from kbroker.tls import openssl_cipher_name

SUBJECT = ((("countryName", "US"),), (("organizationName", "kbroker"),),
           (("organizationalUnitName", "dev"),), (("commonName", "alice"),))


def test_named_listeners_with_advertised_addresses():
    config = Config({
        "listeners": "INTERNAL://127.0.0.1:9092,EXTERNAL://:9093,CONTROLLER://127.0.0.1:9094",
        "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "advertised.listeners": "EXTERNAL://kafka.example.com:19093",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        "listener.name.external.ssl.client.auth": "required",
        "listener.name.external.plain.sasl.jaas.config": 'x user_bob="pw";',
        "listener.name.external.oauthbearer.connections.max.reauth.ms": "60000",
    })
    internal, external = config.listeners()  # the controller listener is not opened
    assert (internal.name, internal.security_protocol, internal.advertised_host) == \
        ("INTERNAL", "PLAINTEXT", "127.0.0.1")
    assert (external.security_protocol, external.host, external.advertised_host, external.advertised_port) == \
        ("SASL_SSL", "", "kafka.example.com", 19093)
    assert config.for_listener(external, "ssl.client.auth") == "required"
    assert config.for_listener(internal, "ssl.client.auth") == "none"
    assert config.for_listener(external, "sasl.jaas.config", "PLAIN") == 'x user_bob="pw";'
    assert config.for_listener(external, "sasl.jaas.config", "SCRAM-SHA-256") is None
    assert config.for_listener(external, "connections.max.reauth.ms", "OAUTHBEARER") == 60000
    assert config.for_listener(external, "connections.max.reauth.ms", "PLAIN") == 0


@pytest.mark.parametrize("settings,message", [
    ({"listeners": "EXTERNAL://127.0.0.1:9092"}, "Listener EXTERNAL is not in listener.security.protocol.map"),
    ({"listeners": "PLAINTEXT://127.0.0.1:9092,plaintext://127.0.0.1:9093"}, "plaintext is repeated"),
    ({"advertised.listeners": "SSL://x:1"}, "names listeners that listeners does not have: SSL"),
    ({"inter.broker.listener.name": "INTERNAL"}, "INTERNAL is not"),
    ({"listener.security.protocol.map": "A:TLS"}, "'A:TLS' is not NAME:PROTOCOL"),
    ({"listener.name.ssl.ssl.client.auth": "always"}, "configuration listener.name.ssl.ssl.client.auth"),
    ({"listener.name.ssl.no.such.setting": "1"}, "Unknown broker config name"),
])
def test_listener_settings_that_do_not_fit_are_refused(settings, message):
    with pytest.raises(KafkaError) as refused:
        Config(settings)
    assert message in refused.value.message


def test_distinguished_name_is_rfc2253_most_specific_first():
    assert distinguished_name(SUBJECT) == "CN=alice,OU=dev,O=kbroker,C=US"
    assert distinguished_name(((("commonName", "a,b+c"),),)) == "CN=a\\,b\\+c"
    assert distinguished_name(((("emailAddress", "a@b"),),)) == "1.2.840.113549.1.9.1=#1603614062"


def test_principal_mapping_rules_as_kafka_applies_them():
    dn = "CN=alice,OU=dev,O=kbroker,C=US"
    assert PrincipalMapper("DEFAULT").name(dn) == dn
    mapper = PrincipalMapper("RULE:^CN=(.*?),OU=(.*?),O=(.*?),C=(.*?)$/$1@$3/U, RULE:^CN=(.*)$/$1/L, DEFAULT")
    assert mapper.name(dn) == "ALICE@KBROKER"
    assert mapper.name("CN=Bob") == "bob"
    assert mapper.name("O=other") == "O=other"
    with pytest.raises(NoMatchingRule):
        PrincipalMapper("RULE:^CN=(.*)$/$1/").name("O=other")
    with pytest.raises(ValueError):
        PrincipalMapper("RULE:^CN=(.*$/$1/")


@pytest.mark.parametrize("iana,openssl", [
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
])
def test_cipher_suites_by_iana_name(iana, openssl):
    assert openssl_cipher_name(iana) == openssl
