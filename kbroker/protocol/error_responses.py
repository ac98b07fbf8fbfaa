"""One error response for any request, built from the schemas' structure (what Kafka's
`AbstractRequest.getErrorResponse` does by hand for each API).

The response mirrors the request: every response array whose elements carry an error code
gets one element per element of the request array it answers (the request's topics ->
the response's topics, their partitions -> its partitions, a list of group ids -> the
groups), with the element's identity (topic name or id, partition index, group id,
resource, key) copied and every error code set. A top-level error code is set as well.
Arrays that carry no error (brokers, members, configs) stay empty. Nothing here knows an
API by name.
"""

from __future__ import annotations

from kbroker.protocol import messages
from kbroker.protocol.messages import Field, Struct

_ERROR_CODES = frozenset({"error_code", "partition_error_code"})
_ERROR_MESSAGE = "error_message"
# Request fields that say which thing an element is; copied into the element answering it.
# Kafka names the same thing differently in a request and its response (Fetch's `Partition`
# is answered by `PartitionIndex`): names within one group stand for each other.
_SAME_THING = (
    frozenset({"name", "topic", "topic_name"}),
    frozenset({"partition_index", "partition", "index", "partition_id"}),
)
_IDENTITIES = frozenset({
    "topic_id", "group_id", "member_id", "group_instance_id", "key", "transactional_id",
    "resource_type", "resource_name", "path", *(name for group in _SAME_THING for name in group)})


def error_response(api_key: int, version: int, request: Struct, error_code: int,
                   message: str | None = None) -> Struct:
    """The response of `api_key` at `version` answering every part of `request` with
    `error_code` (and `message` where the response has an error message)."""
    return _answer(messages.response_class(api_key), request, version, error_code, message,
                   element=False)


def _present(field: Field, version: int) -> bool:
    return _within(field.versions or (0, None), version)


def _within(versions, version: int) -> bool:
    low, high = versions
    return low <= version and (high is None or version <= high)


def _carries_errors(struct: type[Struct]) -> bool:
    return any(f.attr in _ERROR_CODES or (f.struct is not None and _carries_errors(f.struct))
               for f in struct._fields)


def _answer(cls: type[Struct], request: Struct | None, version: int, error_code: int,
            message: str | None, element: bool = True) -> Struct:
    """An instance of `cls` answering `request`: the whole request, or one element of one of
    its arrays (`element`), whose identity it then repeats."""
    response = cls()
    request_fields = [f for f in type(request)._fields if _present(f, version)] if request is not None else []
    for field in cls._fields:
        if not _present(field, version):
            continue
        if field.attr in _ERROR_CODES:
            setattr(response, field.attr, error_code)
        elif field.attr == _ERROR_MESSAGE and message is not None:
            setattr(response, field.attr, message)
        elif field.type == "records":
            # Kafka answers with empty records (MemoryRecords.EMPTY), never null: clients such as
            # sarama 1.22 cannot read a null record set in a Fetch response
            setattr(response, field.attr, b"")
        elif field.array and field.struct is not None and _carries_errors(field.struct):
            source = _answered_array(field.struct, field.attr, request_fields)
            if source is not None:
                setattr(response, field.attr, [
                    _answer_item(field.struct, source, item, version, error_code, message)
                    for item in getattr(request, source.attr) or ()])
    if element and request is not None:
        _copy_identity(response, cls, request, request_fields, version)
    return response


def _answer_item(cls: type[Struct], source: Field, item, version: int, error_code: int,
                 message: str | None) -> Struct:
    if source.struct is not None:
        return _answer(cls, item, version, error_code, message)
    # An array of plain values (group ids, partition indexes): the value is the identity.
    response = _answer(cls, None, version, error_code, message)
    for field in cls._fields:
        if _present(field, version) and field.type == source.type and not field.array \
                and field.attr != _ERROR_MESSAGE:
            setattr(response, field.attr, item)
            break
    return response


def _answered_array(struct: type[Struct], attr: str, request_fields: list[Field]) -> Field | None:
    """The request array that the response array `attr` of `struct`s answers: the one of the
    same name, else the one sharing most field names with it, the first on a tie."""
    candidates = [f for f in request_fields if f.array]
    if not candidates:
        return None
    names = {f.attr for f in struct._fields}

    def likeness(candidate: Field) -> int:
        if candidate.attr == attr:
            return 1000
        if candidate.struct is None:
            return 0
        return len(names & {f.attr for f in candidate.struct._fields})

    return max(candidates, key=likeness)  # max keeps the first of equals


def _copy_identity(response: Struct, cls: type[Struct], request: Struct,
                   request_fields: list[Field], version: int) -> None:
    present = {f.attr: f for f in cls._fields if _present(f, version)}
    for source in request_fields:
        if source.array or source.struct is not None or source.attr not in _IDENTITIES:
            continue
        target = present.get(source.attr)
        if target is None:
            group = next((g for g in _SAME_THING if source.attr in g), ())
            target = next((present[name] for name in group if name in present), None)
        if target is not None and target.type == source.type and not target.array:
            setattr(response, target.attr, getattr(request, source.attr))
