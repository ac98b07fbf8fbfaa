"""Message classes generated at import from protocol_specs/.

Each request/response becomes a ``__slots__`` class (``ProduceRequest``, ``FetchResponse``,
...) whose nested structs are class attributes named by their schema type
(``ProduceResponse.TopicProduceResponse``). Attributes are the schema field names in
snake_case. Constructors are keyword-only and fill every omitted field with its schema
default; the ``__init__`` of each class is generated source so building responses on the
hot path costs no more than a hand-written class.

Lookups for the server: ``request_class(api_key)``, ``response_class(api_key)``,
``API_NAMES`` (key -> name), ``API_KEYS`` (name -> key) and ``API_INFO`` (version
ranges per API key).
"""

from __future__ import annotations

import keyword
import re
import uuid
from functools import cache

from kbroker.protocol.exceptions import UnsupportedVersion
from kbroker.protocol.specs import api_specs, load


@cache  # ~1200 schema fields share ~300 names; the regexes were a fifth of the import time
def snake_case(name: str) -> str:
    """'ThrottleTimeMs' -> 'throttle_time_ms', 'IsKRaftController' -> 'is_k_raft_controller'."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Field:
    """One schema field, with what the codec generator needs to read and write it."""

    __slots__ = (
        "name", "attr", "type", "array", "versions", "nullable_versions", "default", "fresh_default",
        "tag", "tagged_versions", "flexible_override", "flexible_versions", "struct",
    )

    def __init__(self, spec: dict, struct: type | None):
        self.name = spec["name"]
        self.attr = snake_case(spec["name"])
        if keyword.iskeyword(self.attr):
            raise ValueError(f"field {self.name} maps to the Python keyword {self.attr}")
        self.type = spec["type"]
        self.array = spec["array"]
        self.versions = spec["versions"]
        self.nullable_versions = spec["nullable_versions"]
        self.tag = spec.get("tag")
        self.tagged_versions = spec.get("tagged_versions")
        # Only RequestHeader.ClientId overrides the message's flexible versions.
        self.flexible_override = "flexible_versions" in spec
        self.flexible_versions = spec.get("flexible_versions")
        self.struct = struct
        default = spec["default"]
        # Mutable defaults are built fresh for each object; the rest are shared constants.
        self.fresh_default = None
        if default == []:
            self.fresh_default = list
            default = None
        elif default == {}:
            self.fresh_default = struct
            default = None
        elif self.type == "uuid":
            default = uuid.UUID(default)
        elif self.type == "bytes" and default == "":
            default = b""
        self.default = default


class Struct:
    """Base of every generated message and struct class.

    Each class gets a generated ``__init__`` and ``__eq__`` the first time they are called:
    compiling them for the ~370 classes of every API at import took ~100 ms of broker startup.
    """

    __slots__ = ()
    _fields: tuple[Field, ...] = ()
    _flexible_versions: list | None = None
    _valid_versions: tuple[int, int] | None = None  # set on top-level message classes
    __hash__ = None

    def __init__(self, **values):
        cls = type(self)
        cls.__init__ = _make_init(cls._fields)
        cls.__init__(self, **values)

    def __eq__(self, other):
        cls = type(self)
        cls.__eq__ = _make_eq(cls._fields)
        return cls.__eq__(self, other)

    def __repr__(self):
        args = ", ".join(f"{a}={getattr(self, a)!r}" for a in self.__slots__)
        return f"{type(self).__name__}({args})"


_MISSING = object()


def _compile(source: str, env: dict, name: str):
    exec(compile(source, f"<generated {name}>", "exec"), env)
    return env[name]


def _make_eq(fields: tuple[Field, ...]):
    """Generate ``__eq__`` comparing slot by slot (tagged-field encoding compares with defaults)."""
    compare = "".join(f" and self.{f.attr} == other.{f.attr}" for f in fields)
    source = (
        "def __eq__(self, other):\n"
        "    if type(other) is not type(self):\n"
        "        return NotImplemented\n"
        f"    return True{compare}\n"
    )
    return _compile(source, {}, "__eq__")


def _make_init(fields: tuple[Field, ...]):
    """Generate a keyword-only ``__init__`` that assigns every slot (defaults inlined)."""
    if not fields:
        return lambda self: None
    env = {"_MISSING": _MISSING}
    params, body = [], []
    for i, f in enumerate(fields):
        if f.fresh_default is None:
            env[f"_d{i}"] = f.default
            params.append(f"{f.attr}=_d{i}")
            body.append(f"    self.{f.attr} = {f.attr}")
        else:
            env[f"_new{i}"] = f.fresh_default
            params.append(f"{f.attr}=_MISSING")
            body.append(f"    self.{f.attr} = _new{i}() if {f.attr} is _MISSING else {f.attr}")
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    return _compile(source, env, "__init__")


def _build_class(name: str, field_specs: list, flexible: list | None, structs: dict) -> type:
    """Create the class for ``name`` and, first, the classes of its nested structs."""
    fields = []
    for spec in field_specs:
        struct = None
        if spec["type"] == "struct":
            struct = structs.get(spec["struct"])
            if struct is None:
                struct = _build_class(spec["struct"], spec["fields"], flexible, structs)
                structs[spec["struct"]] = struct
        fields.append(Field(spec, struct))
    fields = tuple(fields)
    namespace = {
        "__slots__": tuple(f.attr for f in fields),
        "__hash__": None,
        "__module__": __name__,
        "_fields": fields,
        "_flexible_versions": flexible,
    }
    return type(name, (Struct,), namespace)


def build_message_class(spec: dict) -> type:
    """The class for one message spec, with all its nested struct classes as attributes."""
    structs: dict[str, type] = {}
    cls = _build_class(spec["name"], spec["fields"], spec["flexible_versions"], structs)
    cls._valid_versions = tuple(spec["valid_versions"])
    for struct_name, struct in structs.items():
        struct.__qualname__ = f"{spec['name']}.{struct_name}"
        setattr(cls, struct_name, struct)
    return cls


class ApiInfo:
    """What the server needs to know about one API key.

    Its request and response classes are built on first use: building the ~290 classes of
    every API at import was the largest part of kbroker's own import time, and a broker
    only ever needs those of the APIs it serves and is sent.
    """

    __slots__ = ("api_key", "name", "min_version", "max_version", "flexible_min_version",
                 "latest_version_unstable", "_spec", "_request", "_response")

    def __init__(self, spec: dict):
        self.api_key = spec["api_key"]
        self.name = spec["name"]
        self.min_version, self.max_version = spec["request"]["valid_versions"]
        flexible = spec["request"]["flexible_versions"]
        self.flexible_min_version = flexible[0] if flexible else None
        self.latest_version_unstable = spec["request"]["latest_version_unstable"]
        self._spec = spec
        self._request: type | None = None
        self._response: type | None = None

    @property
    def request(self) -> type:
        if self._request is None:
            self._request = _publish(build_message_class(self._spec["request"]))
        return self._request

    @property
    def response(self) -> type:
        if self._response is None:
            self._response = _publish(build_message_class(self._spec["response"]))
        return self._response

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    def is_flexible(self, version: int) -> bool:
        return self.flexible_min_version is not None and version >= self.flexible_min_version


API_INFO: dict[int, ApiInfo] = {}
API_NAMES: dict[int, str] = {}  # api key -> API name ("Produce")
API_KEYS: dict[str, int] = {}  # API name -> api key
_CLASS_OWNERS: dict[str, tuple[int, str]] = {}  # "FetchRequest" -> (1, "request")


def _publish(cls: type) -> type:
    """Make a built message class a plain module attribute, so later lookups are direct."""
    globals()[cls.__name__] = cls
    return cls


def __getattr__(name: str) -> type:
    """``messages.FetchRequest`` and ``from ... import FetchRequest`` build the class on demand."""
    owner = _CLASS_OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    api_key, side = owner
    return getattr(API_INFO[api_key], side)


def _register_apis() -> None:
    for api_key, spec in api_specs().items():
        API_INFO[api_key] = ApiInfo(spec)
        API_NAMES[api_key] = spec["name"]
        API_KEYS[spec["name"]] = api_key
        _CLASS_OWNERS[spec["request"]["name"]] = (api_key, "request")
        _CLASS_OWNERS[spec["response"]["name"]] = (api_key, "response")


_register_apis()
RequestHeader = build_message_class(load("RequestHeader"))
ResponseHeader = build_message_class(load("ResponseHeader"))
# Embedded formats carried as opaque bytes in JoinGroup/SyncGroup ("consumer" protocol type).
ConsumerProtocolSubscription = build_message_class(load("ConsumerProtocolSubscription"))
ConsumerProtocolAssignment = build_message_class(load("ConsumerProtocolAssignment"))


def api_info(api_key: int) -> ApiInfo:
    info = API_INFO.get(api_key)
    if info is None:
        raise UnsupportedVersion(f"unknown API key {api_key}")
    return info


def request_class(api_key: int) -> type:
    return api_info(api_key).request


def response_class(api_key: int) -> type:
    return api_info(api_key).response


def _request_header_alias(attr: str):
    return property(lambda self: getattr(self, attr), lambda self, value: setattr(self, attr, value))


# The architecture names the header's first fields api_key/api_version; the schema says
# RequestApiKey/RequestApiVersion. Both spellings work.
RequestHeader.api_key = _request_header_alias("request_api_key")
RequestHeader.api_version = _request_header_alias("request_api_version")
