"""The principal of a TLS client certificate, as Kafka names it.

Rules (Kafka's DefaultKafkaPrincipalBuilder and SslPrincipalMapper):
 P1. The name is the certificate subject's distinguished name in RFC 2253 form, as Java's
     X500Principal.getName() writes it: most specific RDN first (CN=alice,OU=dev,O=kbroker),
     the keywords CN, C, L, ST, O, OU, STREET, DC, UID, other attributes by OID with their
     DER value in hex (1.2.840.113549.1.9.1=#16...), special characters escaped with `\\`.
 P2. `ssl.principal.mapping.rules` is a comma-separated list of `DEFAULT` (the name as is)
     and `RULE:pattern/replacement/[LU]`; the first rule whose pattern matches the whole name
     gives the name (Java's $1 back references, lower- or upper-cased with L or U).
 P3. When no rule applies, the client is refused ("No rules apply to ...").
 P4. A TLS client without a certificate is User:ANONYMOUS.
"""

from __future__ import annotations

import re

ANONYMOUS = "User:ANONYMOUS"

_KEYWORDS = {"commonName": "CN", "countryName": "C", "localityName": "L",
             "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
             "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}
# Attributes without an RFC 2253 keyword: (OID, DER string tag) for the hex form.
_BY_OID = {"emailAddress": ("1.2.840.113549.1.9.1", 0x16), "serialNumber": ("2.5.4.5", 0x13),
           "title": ("2.5.4.12", 0x0C), "givenName": ("2.5.4.42", 0x0C), "surname": ("2.5.4.4", 0x0C)}
_SPECIAL = re.compile(r'([,+"\\<>;])')


class NoMatchingRule(Exception):
    """No ssl.principal.mapping.rules entry applies to a name."""


def _escape(value: str) -> str:
    value = _SPECIAL.sub(r"\\\1", value)
    if value.startswith(("#", " ")):
        value = "\\" + value
    if value.endswith(" ") and not value.endswith("\\ "):
        value = value[:-1] + "\\ "
    return value


def _der_hex(tag: int, value: str) -> str:
    data = value.encode()
    length = bytes([len(data)]) if len(data) < 128 else bytes([0x81, len(data)])
    return "#" + (bytes([tag]) + length + data).hex()


def _attribute(name: str, value: str) -> str:
    if name in _KEYWORDS:
        return f"{_KEYWORDS[name]}={_escape(value)}"
    oid, tag = _BY_OID.get(name, (name, 0x0C))
    return f"{oid}={_der_hex(tag, value)}"


def distinguished_name(subject) -> str:
    """RFC 2253 form of the subject of ssl's getpeercert(): a tuple of RDNs, each a tuple of
    (attribute name, value) pairs, least specific first (rule P1)."""
    return ",".join("+".join(_attribute(name, value) for name, value in rdn) for rdn in reversed(subject))


_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(?:,\s*|$)")
_BACK_REFERENCE = re.compile(r"\$(\d+)")


class PrincipalMapper:
    """`ssl.principal.mapping.rules` (rule P2); ValueError for rules that do not parse."""

    def __init__(self, rules: str):
        self._rules: list[tuple[re.Pattern, str, str] | None] = []  # None: DEFAULT
        for match in _RULE_SPLITTER.finditer(rules.strip()):
            text = match.group(1)
            if not text:
                continue
            parsed = re.fullmatch(_RULE, text)
            if parsed is None or parsed.group(5):
                raise ValueError(f"Invalid rule: {text}")
            if parsed.group(1):
                self._rules.append(None)
            else:
                try:
                    pattern = re.compile(parsed.group(2))
                except re.error as exc:
                    raise ValueError(f"Invalid rule: {text}: {exc}") from None
                self._rules.append((pattern, parsed.group(3), parsed.group(4)))
            if match.end() >= len(rules.strip()):
                break

    def name(self, distinguished: str) -> str:
        for rule in self._rules:
            if rule is None:
                return distinguished
            pattern, replacement, case = rule
            match = pattern.fullmatch(distinguished)
            if match is None:
                continue
            result = pattern.sub(_python_replacement(replacement, pattern.groups), distinguished)
            return result.lower() if case == "L" else result.upper() if case == "U" else result
        raise NoMatchingRule(f"No rules apply to {distinguished}")


def _python_replacement(replacement: str, groups: int) -> str:
    """Java's `$1` back references as Python's, a reference beyond the groups kept literally."""
    def group(match: re.Match) -> str:
        number = match.group(1)
        index = int(number)
        while index > groups and index >= 10:
            index //= 10
        if index > groups or number.startswith("0"):
            return match.group(0)
        return f"\\g<{index}>" + number[len(str(index)):]
    escaped = replacement.replace("\\", "\\\\")
    return _BACK_REFERENCE.sub(group, escaped)
