"""TLS for SSL and SASL_SSL listeners: an ssl.SSLContext from Kafka's ssl.* settings.

Each setting may be given per listener (listener.name.NAME.ssl.keystore.location) and
applies to that listener alone. Key and trust stores are PEM, as Kafka's ssl.keystore.type=PEM:
a file with the private key and certificate chain, or both inline. Anything that cannot be set
up raises TlsSetupError with one line naming the setting, so the broker never starts a TLS
listener that would not work, nor serves plaintext in its place.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile

from kbroker.listeners import ListenerConfig
from kbroker.security.principal import PrincipalMapper

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# TLS 1.3 suites: always enabled by OpenSSL, so only accepted by name.
_TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                           "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256"})


class TlsSetupError(Exception):
    """A listener's TLS settings cannot be used; the message is one line."""


def openssl_cipher_name(name: str) -> str:
    """OpenSSL's name of a TLS 1.2 suite given by its IANA name, as Kafka takes them
    (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 -> ECDHE-RSA-AES128-GCM-SHA256); other names as given."""
    exchange, separator, cipher = name.removeprefix("TLS_").partition("_WITH_")
    if not name.startswith("TLS_") or not separator:
        return name
    cipher = re.sub(r"AES_(\d+)_GCM_", r"AES\1-GCM-", cipher)
    cipher = re.sub(r"AES_(\d+)_CBC_", r"AES\1-", cipher)
    cipher = cipher.replace("CHACHA20_POLY1305_SHA256", "CHACHA20-POLY1305")
    prefix = "" if exchange == "RSA" else exchange.replace("_", "-") + "-"
    return prefix + cipher


class _Settings:
    """One listener's view of the ssl.* settings."""

    def __init__(self, config, listener: ListenerConfig):
        self._config, self.listener = config, listener

    def __getitem__(self, name: str):
        return self._config.for_listener(self.listener, name)

    def name(self, name: str) -> str:
        """How to name a setting in an error: with the listener prefix when given that way."""
        prefixed = self.listener.config_prefix + name
        return prefixed if not self._config.is_default(prefixed) else name


def server_context(config, listener: ListenerConfig) -> ssl.SSLContext:
    """The SSLContext of one TLS listener, or TlsSetupError."""
    settings = _Settings(config, listener)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_versions(context, settings)
    _load_keystore(context, settings)
    client_auth = settings["ssl.client.auth"]
    if client_auth != "none":
        _load_truststore(context, settings)
    context.verify_mode = _CLIENT_AUTH[client_auth]
    _set_ciphers(context, settings)
    try:
        PrincipalMapper(settings["ssl.principal.mapping.rules"])
    except ValueError as exc:
        raise TlsSetupError(f"{settings.name('ssl.principal.mapping.rules')}: {exc}") from None
    return context


def own_client_context(config, listener: ListenerConfig) -> ssl.SSLContext:
    """The context the broker's own web console connects to a TLS listener with. It trusts
    exactly the certificate the listener serves (the first of its key store's chain; no CA, no
    host name to match), so only a peer holding the listener's private key passes; and when the
    listener requires client certificates it presents that same certificate, whose principal
    is then the console's (give it ACLs, or name it in super.users)."""
    settings = _Settings(config, listener)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the pinned leaf is a trust anchor
    _set_versions(context, settings)
    _set_ciphers(context, settings)
    chain = settings["ssl.keystore.certificate.chain"]
    location = settings["ssl.keystore.location"]
    if location:
        with open(location) as file:
            chain = file.read()
    leaf = _PEM_CERTIFICATE.search(chain or "")
    if leaf is None:
        raise TlsSetupError(f"{settings.name('ssl.keystore.location')}: no certificate found")
    context.load_verify_locations(cadata=leaf.group(0))
    if settings["ssl.client.auth"] == "required":
        _load_keystore(context, settings)
    return context


_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def principal_mapper(config, listener: ListenerConfig) -> PrincipalMapper:
    return PrincipalMapper(config.for_listener(listener, "ssl.principal.mapping.rules"))


def _set_versions(context: ssl.SSLContext, settings: _Settings) -> None:
    versions = sorted(_VERSIONS[name] for name in settings["ssl.enabled.protocols"])
    context.minimum_version, context.maximum_version = versions[0], versions[-1]


def _set_ciphers(context: ssl.SSLContext, settings: _Settings) -> None:
    suites = settings["ssl.cipher.suites"]
    if not suites:
        return
    tls12 = [openssl_cipher_name(name) for name in suites if name not in _TLS13_SUITES]
    for name in tls12:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(name)
        except ssl.SSLError:
            raise TlsSetupError(f"{settings.name('ssl.cipher.suites')}: unknown cipher suite {name}") from None
    if tls12:
        context.set_ciphers(":".join(tls12))
    elif context.maximum_version == ssl.TLSVersion.TLSv1_3:
        context.minimum_version = ssl.TLSVersion.TLSv1_3  # TLS 1.2 would have no suite left
    else:
        raise TlsSetupError(f"{settings.name('ssl.cipher.suites')}: no suite of an enabled protocol")


def _require_pem(settings: _Settings, store: str) -> None:
    kind = settings[f"ssl.{store}.type"]
    if kind != "PEM":
        raise TlsSetupError(f"{settings.name(f'ssl.{store}.type')} is {kind}: kbroker reads PEM "
                            f"{store}s only (set ssl.{store}.type=PEM)")


def _load_keystore(context: ssl.SSLContext, settings: _Settings) -> None:
    location = settings["ssl.keystore.location"]
    chain, key = settings["ssl.keystore.certificate.chain"], settings["ssl.keystore.key"]
    if not location and not (chain and key):
        raise TlsSetupError(f"{settings.listener.security_protocol} needs a key store: set "
                            "ssl.keystore.location or ssl.keystore.certificate.chain and ssl.keystore.key")
    _require_pem(settings, "keystore")
    if settings["ssl.keystore.password"]:
        raise TlsSetupError(f"{settings.name('ssl.keystore.password')}: SSL key store password cannot "
                            "be specified with PEM format, only key password may be specified")
    password = settings["ssl.key.password"]
    what = settings.name("ssl.keystore.location") if location else settings.name("ssl.keystore.key")
    try:
        if location:
            context.load_cert_chain(location, password=password)
        else:
            _load_inline_chain(context, chain, key, password)
    except FileNotFoundError:
        raise TlsSetupError(f"{what}: no such file: {location}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsSetupError(f"{what}: cannot load the key and certificate chain: {_reason(exc)}") from None


def _load_inline_chain(context: ssl.SSLContext, chain: str, key: str, password: str | None) -> None:
    """load_cert_chain reads files only: the PEM text goes through a private temporary file,
    removed at once."""
    with tempfile.TemporaryDirectory(prefix="kbroker-tls-") as directory:
        path = os.path.join(directory, "keystore.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(key.strip() + "\n" + chain.strip() + "\n")
        context.load_cert_chain(path, password=password)


def _load_truststore(context: ssl.SSLContext, settings: _Settings) -> None:
    location, certificates = settings["ssl.truststore.location"], settings["ssl.truststore.certificates"]
    if not location and not certificates:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return
    _require_pem(settings, "truststore")
    what = settings.name("ssl.truststore.location" if location else "ssl.truststore.certificates")
    try:
        if location:
            context.load_verify_locations(cafile=location)
        else:
            context.load_verify_locations(cadata=certificates)
    except FileNotFoundError:
        raise TlsSetupError(f"{what}: no such file: {location}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsSetupError(f"{what}: cannot load the trusted certificates: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return str(getattr(exc, "strerror", None) or exc)
