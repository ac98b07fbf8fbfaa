"""Client quotas (KIP-546): stored, altered and described as Kafka's controller does (enforced by
kbroker/throttling.py).

An entity maps entity types (`user`, `client-id`, `ip`) to a name, or to None for the type's
default entity. Rules, from Kafka's ClientQuotaControlManager and ClientQuotasImage:
1. Alter, per entity: no key twice, else the entity gets "Ignoring duplicate entity ..." (as
   Kafka's quirk answers); the same entity twice in one request likewise.
2. Entity types are user, client-id and ip, none twice or with an empty name; ip combines with
   nothing else and must be an IP address or a resolvable host.
3. Keys depend on the entity: user and/or client-id take producer_byte_rate,
   consumer_byte_rate (whole numbers), request_percentage and controller_mutation_rate; ip takes
   connection_creation_rate (a whole number up to 2^31-1). Values must be above 0.
4. A removal of a key that is not set is no change; an entity whose last key is removed is gone.
   Entities that fail do not stop the others (validate_only changes nothing).
5. Describe filters by components: EXACT (a name), DEFAULT (the default entity), SPECIFIED (any
   entity that has the type, defaults included); `strict` means no other types. Empty or
   repeated types and bad match combinations are INVALID_REQUEST, unknown types or match types
   UNSUPPORTED_VERSION; ip cannot be filtered with user or client-id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kbroker.log.files import read_if_exists, write_atomically
from kbroker.protocol.errors import ErrorCode, KafkaError

QUOTAS_FILE = "client-quotas.json"
USER, CLIENT_ID, IP = "user", "client-id", "ip"
_ENTITY_TYPES = (CLIENT_ID, USER, IP)  # the order Kafka's entity maps print in
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2

_LONG_MAX = 2.0**63 - 1
_CLIENT_KEYS = {"producer_byte_rate": _LONG_MAX, "consumer_byte_rate": _LONG_MAX,
                "request_percentage": None, "controller_mutation_rate": None}  # None: a double
_IP_KEYS: dict[str, float | None] = {"connection_creation_rate": 2.0**31 - 1}

Entity = tuple[tuple[str, str | None], ...]  # (type, name) pairs in _ENTITY_TYPES order


def entity_text(pairs) -> str:
    """The entity as Kafka's ClientQuotaEntity.toString prints it in error messages."""
    ordered = sorted(pairs, key=lambda pair: _ENTITY_TYPES.index(pair[0])
                     if pair[0] in _ENTITY_TYPES else len(_ENTITY_TYPES))
    return "ClientQuotaEntity(entries={" + ", ".join(f"{t}={n}" for t, n in ordered) + "})"


def _invalid(message: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_REQUEST, message)


def make_entity(pairs: list[tuple[str, str | None]]) -> Entity:
    """Rule 2's checks of the types and names; raises KafkaError (INVALID_REQUEST)."""
    if not pairs:
        raise _invalid("Invalid empty client quota entity")
    entries: dict[str, str | None] = {}
    for entity_type, name in pairs:
        if entity_type in entries:
            raise _invalid(f"Invalid empty client quota entity, duplicate entity entry {entity_type}")
        if entity_type not in _ENTITY_TYPES:
            raise _invalid(f"Unhandled client quota entity type: {entity_type}")
        if name == "":
            raise _invalid(f"Empty {entity_type} not supported")
        entries[entity_type] = name
    return tuple((entity_type, entries[entity_type]) for entity_type in _ENTITY_TYPES
                 if entity_type in entries)


def _valid_keys(entity: Entity, resolvable: set[str]) -> dict[str, float | None]:
    types = dict(entity)
    if IP in types:
        if len(types) > 1:
            raise _invalid("Invalid quota entity combination, IP entity should not be combined "
                           "with User or ClientId")
        if types[IP] is not None and types[IP] not in resolvable:
            raise _invalid(f"{types[IP]} is not a valid IP or resolvable host.")
        return _IP_KEYS
    return _CLIENT_KEYS


def _check_value(keys: dict[str, float | None], key: str, value: float) -> None:
    if key not in keys:
        raise _invalid(f"Invalid configuration key {key}")
    if value <= 0.0:
        raise _invalid(f"Quota {key} must be greater than 0")
    limit = keys[key]
    if limit is None:
        return
    if value > limit:
        kind = "an INT" if limit < _LONG_MAX else "a LONG"
        raise _invalid(f"Proposed value for {key} is too large for {kind}.")
    if value - math.floor(value) > 1e-16:
        raise _invalid(f"Proposed value for {key} is not an integer.")


class ClientQuotas:
    """The quotas of every entity, kept in the data dir (Kafka: ClientQuotaRecords)."""

    def __init__(self, data_dir: Path):
        self._path = data_dir / QUOTAS_FILE
        stored = read_if_exists(str(self._path))
        self.quotas: dict[Entity, dict[str, float]] = {
            tuple((t, n) for t, n in item["entity"]): item["values"]
            for item in (json.loads(stored) if stored else [])}

    def alter(self, alterations: list[tuple[list[tuple[str, str | None]], list[tuple[str, float | None]]]],
              resolvable: set[str], validate_only: bool) -> list[tuple[Entity | list, KafkaError | None]]:
        """Apply [(entity pairs, [(key, value or None to remove)])]; returns per alteration its
        entity and its error (None when applied). Persists before the new values are in effect."""
        results: list = []
        changed = {entity: dict(values) for entity, values in self.quotas.items()}
        seen: set = set()
        for pairs, ops in alterations:
            key_of_entity = tuple(sorted(pairs, key=lambda pair: (pair[0], pair[1] or "")))
            keys_given = [key for key, _ in ops]
            if key_of_entity in seen or len(set(keys_given)) != len(keys_given):
                results.append((pairs, _invalid(f"Ignoring duplicate entity {entity_text(pairs)}")))
                seen.add(key_of_entity)
                continue
            seen.add(key_of_entity)
            try:
                entity = make_entity(pairs)
                keys = _valid_keys(entity, resolvable)
                for key, value in ops:
                    if value is not None:
                        _check_value(keys, key, value)
            except KafkaError as exc:
                results.append((pairs, exc))
                continue
            values = changed.setdefault(entity, {})
            for key, value in ops:
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            if not values:
                del changed[entity]
            results.append((entity, None))
        if not validate_only and changed != self.quotas:
            items = [{"entity": [list(pair) for pair in entity], "values": values}
                     for entity, values in changed.items()]
            write_atomically(str(self._path), json.dumps(items, sort_keys=True).encode())
            self.quotas = changed
        return results

    def describe(self, components: list[tuple[str, int, str | None]], strict: bool
                 ) -> list[tuple[Entity, dict[str, float]]]:
        """The entities matching the filter (rule 5); raises KafkaError for a bad filter."""
        exact: dict[str, str | None] = {}
        specified: set[str] = set()
        for entity_type, match_type, match in components:
            if not entity_type:
                raise _invalid("Invalid empty entity type.")
            if entity_type in exact or entity_type in specified:
                raise _invalid(f"Entity type {entity_type} cannot appear more than once in the filter.")
            if entity_type not in _ENTITY_TYPES:
                raise KafkaError(ErrorCode.UNSUPPORTED_VERSION, f"Unsupported entity type {entity_type}")
            if match_type == MATCH_EXACT:
                if match is None:
                    raise _invalid("Request specified MATCH_TYPE_EXACT, but set match string to null.")
                exact[entity_type] = match
            elif match_type in (MATCH_DEFAULT, MATCH_SPECIFIED):
                if match is not None:
                    name = "MATCH_TYPE_DEFAULT" if match_type == MATCH_DEFAULT else "MATCH_TYPE_SPECIFIED"
                    raise _invalid(f"Request specified {name}, but also specified a match string.")
                if match_type == MATCH_DEFAULT:
                    exact[entity_type] = None
                else:
                    specified.add(entity_type)
            else:
                raise KafkaError(ErrorCode.UNSUPPORTED_VERSION, f"Unsupported match type {match_type}")
        filtered = set(exact) | specified
        if IP in filtered and filtered & {USER, CLIENT_ID}:
            raise _invalid("Invalid entity filter component combination. IP filter component "
                           "should not be used with user or clientId filter component.")
        return [(entity, values) for entity, values in self.quotas.items()
                if _matches(dict(entity), exact, specified, strict)]


def _matches(entries: dict[str, str | None], exact: dict[str, str | None], specified: set[str],
             strict: bool) -> bool:
    if strict and len(entries) != len(exact) + len(specified):
        return False
    return (all(entity_type in entries and entries[entity_type] == name
                for entity_type, name in exact.items())
            and all(entity_type in entries for entity_type in specified))
