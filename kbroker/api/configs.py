"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, this broker, groups and
client metrics subscriptions, and ListConfigResources.

Rules (Kafka's ConfigHelper, ConfigAdminManager, ConfigurationControlManager and
ControllerConfigurationValidator):
- A topic lists every topic config of the log's table with the value in effect. Its source is
  TOPIC_CONFIG when the topic overrides it, else that of the broker setting giving the default:
  dynamic for this broker, dynamic cluster default, static (command line), or the default.
  Synonyms (v1+) list the override, then every layer of that broker setting. Topic configs are
  never read-only.
- The broker resource "<node id>" lists every broker setting; "" only the cluster-wide dynamic
  ones. Settings Kafka cannot change at runtime are read-only; secrets have no value.
- AlterConfigs replaces all overrides of a resource; IncrementalAlterConfigs applies SET,
  DELETE, APPEND and SUBTRACT (the last two on list configs only, else INVALID_CONFIG). A
  resource twice, a key twice or a null value -> INVALID_REQUEST. Bad topic configs ->
  INVALID_CONFIG, then an unknown topic -> UNKNOWN_TOPIC_OR_PARTITION; bad broker configs ->
  INVALID_REQUEST (Kafka's KAFKA-13609). Changes are persisted and take effect at once.
- A group resource (type 32) lists every group config: the group's override (source
  GROUP_CONFIG) or the broker setting it defaults to (kbroker/group_configs.py).
- A client metrics resource (type 16) is a telemetry subscription (KIP-714): `metrics`,
  `interval.ms`, `match`, checked as Kafka's ClientMetricsConfigs; it lists only what it sets,
  and setting nothing removes it (kbroker/telemetry.py).
- ListConfigResources lists, of the types asked (all when none are), every topic, this broker
  (as BROKER and BROKER_LOGGER), the groups with config overrides and the client metrics
  subscriptions. v0 knows CLIENT_METRICS only; an unknown type -> UNSUPPORTED_VERSION for the
  whole request.
"""

from __future__ import annotations

from typing import NamedTuple

from kbroker.api.authorization import allowed_cluster, allowed_group, allowed_topic
from kbroker.api.context import RequestContext
from kbroker.api.registry import serves
from kbroker.config import SETTINGS, SETTINGS_BY_NAME, ConfigSource
from kbroker.group_configs import GROUP_SETTINGS
from kbroker.log import TOPIC_SETTINGS_BY_NAME, LogConfig, validate_topic_name
from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.protocol.messages import (
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListConfigResourcesRequest,
    ListConfigResourcesResponse,
)
from kbroker.security.authorizer import Operation
from kbroker.telemetry import INTERVAL_MS, MATCH, METRICS

TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP = 2, 4, 8, 16, 32  # ConfigResource.Type ids
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3  # AlterConfigOp.OpType ids
_OPERATION_NAMES = {APPEND: "APPEND", SUBTRACT: "SUBTRACT"}
PASSWORD_TYPE = 9
# DescribeConfigsResponse.ConfigType ids, by Setting.kind.
_CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6, "list": 7}


class ConfigEntry(NamedTuple):
    name: str
    value: str | None
    source: ConfigSource
    read_only: bool
    sensitive: bool
    synonyms: list[tuple[str, str | None, ConfigSource]]
    config_type: int
    documentation: str | None


def check_topic_configs(broker, overrides: dict[str, str]) -> LogConfig:
    """The config a topic with these overrides would have; INVALID_CONFIG when it cannot."""
    return broker.logs.defaults.with_overrides(overrides).check_rules()


def topic_config_entries(broker, overrides: dict[str, str]) -> list[ConfigEntry]:
    """Every topic config of a topic with these overrides, as DescribeConfigs reports them."""
    config = broker.logs.defaults.with_overrides(overrides)
    entries = []
    for name, setting in sorted(TOPIC_SETTINGS_BY_NAME.items()):
        value = setting.render(getattr(config, setting.log_field))
        synonyms = [(name, value, ConfigSource.TOPIC_CONFIG)] if name in overrides else []
        if setting.broker_name is not None:
            synonyms += [(setting.broker_name, text, source)
                         for source, text in broker.config.sources(setting.broker_name)]
        source = synonyms[0][2] if synonyms else ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(name, value, source, False, False, synonyms,
                                   _CONFIG_TYPES[setting.kind], setting.doc))
    return entries


def _group_entries(broker, group_id: str) -> list[ConfigEntry]:
    """Every group config of one group: its override, else the broker setting or default."""
    overrides = broker.group_configs.overrides(group_id)
    entries = []
    for name, group_setting in sorted(GROUP_SETTINGS.items()):
        setting = group_setting.setting
        synonyms = [(name, overrides[name], ConfigSource.GROUP_CONFIG)] if name in overrides else []
        if group_setting.broker_name is not None:
            synonyms += [(group_setting.broker_name, text, source)
                         for source, text in broker.config.sources(group_setting.broker_name)]
        value = overrides[name] if name in overrides else broker.group_configs.default_text(name)[0]
        source = synonyms[0][2] if synonyms else ConfigSource.DEFAULT_CONFIG
        entries.append(ConfigEntry(name, value, source, False, False, synonyms,
                                   _CONFIG_TYPES[setting.kind], setting.doc))
    return entries


def _broker_entries(broker, cluster_default: bool) -> list[ConfigEntry]:
    """Broker settings: all of them, or those set dynamically for the whole cluster."""
    config = broker.config
    if cluster_default:
        names = list(config.dynamic_texts(ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG))
    else:
        names = [setting.name for setting in SETTINGS] + [
            name for layer in (ConfigSource.DYNAMIC_BROKER_CONFIG, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
            for name in config.dynamic_texts(layer) if name not in SETTINGS_BY_NAME]
    entries = []
    for name in dict.fromkeys(names):
        setting = SETTINGS_BY_NAME.get(name)
        sensitive = setting is not None and setting.sensitive
        sources = config.sources(name)
        if cluster_default:
            sources = [s for s in sources if s[0] == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG]
        if cluster_default or setting is None:
            value = sources[0][1]
        else:
            value = setting.render(config[name])
        synonyms = [(name, None if sensitive else text, source) for source, text in sources]
        entries.append(ConfigEntry(
            name, None if sensitive else value,
            sources[0][0] if sources else ConfigSource.DEFAULT_CONFIG,
            setting is None or not setting.dynamic, sensitive, synonyms,
            PASSWORD_TYPE if sensitive else _CONFIG_TYPES.get(setting.kind, 0) if setting else 0,
            setting.doc if setting else None))
    return entries


def _broker_layer(broker, name: str, describing: bool = False) -> ConfigSource:
    """Which dynamic layer a broker resource name means: "" all brokers, else this one (the
    simulated brokers of --brokers N share one configuration)."""
    if not name:
        return ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
    try:
        node = int(name)
    except ValueError:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"{'Broker' if describing else 'Node'} id must be "
                         f"an integer, but it is: {name}") from None
    if node not in broker.node_ids:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {broker.node_id}"
                         f"{' or empty string' if describing else ''}, but received {name}")
    return ConfigSource.DYNAMIC_BROKER_CONFIG


# -- DescribeConfigs -------------------------------------------------------------------------

def _entries(broker, resource_type: int, name: str) -> list[ConfigEntry]:
    if resource_type == TOPIC:
        validate_topic_name(name)
        info = broker.logs.topics.get(name)
        if info is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        return topic_config_entries(broker, info.configs)
    if resource_type == BROKER:
        layer = _broker_layer(broker, name, describing=True)
        return _broker_entries(broker, cluster_default=layer == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    if resource_type == GROUP:
        return _group_entries(broker, name)
    if resource_type == CLIENT_METRICS:
        return _client_metrics_entries(broker, name)
    raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unsupported resource type: {resource_type}")


def _client_metrics_entries(broker, name: str) -> list[ConfigEntry]:
    """A subscription lists the configs it sets, as Kafka's ConfigHelper does."""
    if not name:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Client metrics subscription name must not be empty")
    return [ConfigEntry(key, value, ConfigSource.CLIENT_METRICS_CONFIG, False, False, [],
                        _CONFIG_TYPES["int" if key == INTERVAL_MS else "list"], None)
            for key, value in sorted(broker.telemetry.subscriptions.texts(name).items())]


def _check_authorized(ctx: RequestContext, operation: Operation, resource) -> None:
    """Kafka's check of a config resource: a topic and a group by their own ACLs, the broker,
    its loggers and client metrics by the cluster's."""
    resource_type, name = resource.resource_type, resource.resource_name
    if resource_type == TOPIC:
        if not allowed_topic(ctx, operation, name):
            raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed.")
    elif resource_type == GROUP:
        if not allowed_group(ctx, operation, name):
            raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed.")
    elif not allowed_cluster(ctx, operation):
        raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")


def _describe(ctx: RequestContext, resource, synonyms: bool,
              documentation: bool) -> DescribeConfigsResponse.DescribeConfigsResult:
    broker = ctx.broker
    Result = DescribeConfigsResponse.DescribeConfigsResult
    Entry = DescribeConfigsResponse.DescribeConfigsResourceResult
    Synonym = DescribeConfigsResponse.DescribeConfigsSynonym
    try:
        _check_authorized(ctx, Operation.DESCRIBE_CONFIGS, resource)
        entries = _entries(broker, resource.resource_type, resource.resource_name)
    except KafkaError as exc:
        return Result(error_code=exc.code, error_message=exc.message, resource_type=resource.resource_type,
                      resource_name=resource.resource_name, configs=[])
    keys = resource.configuration_keys
    if keys:
        entries = [entry for entry in entries if entry.name in keys]
    return Result(
        error_code=ErrorCode.NONE, error_message=None, resource_type=resource.resource_type,
        resource_name=resource.resource_name,
        configs=[Entry(
            name=entry.name, value=entry.value, read_only=entry.read_only, config_source=entry.source,
            is_default=entry.source == ConfigSource.DEFAULT_CONFIG,  # v0 only
            is_sensitive=entry.sensitive,
            synonyms=[Synonym(name=name, value=value, source=source) for name, value, source in entry.synonyms]
            if synonyms else [],
            config_type=entry.config_type, documentation=entry.documentation if documentation else None,
        ) for entry in entries],
    )


@serves("DescribeConfigs", 1, 4, oldest=0)
async def handle_describe_configs(ctx: RequestContext,
                                  request: DescribeConfigsRequest) -> DescribeConfigsResponse:
    version = ctx.api_version
    synonyms = version >= 1 and request.include_synonyms
    documentation = version >= 3 and request.include_documentation
    return DescribeConfigsResponse(throttle_time_ms=0, results=[
        _describe(ctx, resource, synonyms, documentation) for resource in request.resources
    ])


# -- AlterConfigs and IncrementalAlterConfigs ------------------------------------------------

def _replace_configs(broker, resource_type: int, name: str, texts: dict[str, str],
                     validate_only: bool) -> None:
    """Make `texts` the whole set of overrides of one resource."""
    if resource_type == BROKER:
        broker.dynamic_configs.alter(_broker_layer(broker, name), texts, validate_only)
        if not validate_only:
            broker.metadata_offset.advance()
        return
    if resource_type == GROUP:
        if not name:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "Group name must not be empty.")
        broker.group_configs.replace(name, texts, validate_only)
        return
    if resource_type == CLIENT_METRICS:
        broker.telemetry.subscriptions.replace(name, texts, validate_only)
        if not validate_only:
            broker.metadata_offset.advance()
        return
    if resource_type != TOPIC:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown resource type {resource_type}")
    if not name:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    validate_topic_name(name)
    check_topic_configs(broker, texts)
    if name not in broker.logs.topics:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
    if not validate_only:
        broker.logs.alter_topic_configs(name, texts)
        broker.metadata_offset.advance()


def _current_configs(broker, resource_type: int, name: str) -> dict[str, str]:
    if resource_type == BROKER:
        return broker.config.dynamic_texts(_broker_layer(broker, name))
    if resource_type == GROUP:
        return broker.group_configs.overrides(name)
    if resource_type == CLIENT_METRICS:
        return broker.telemetry.subscriptions.texts(name)
    info = broker.logs.topics.get(name) if resource_type == TOPIC else None
    return dict(info.configs) if info is not None else {}


def _list_default(resource_type: int, key: str, operation: int) -> str:
    """The default of a list config APPEND/SUBTRACT starts from (Kafka: the static default)."""
    if resource_type == CLIENT_METRICS and key in (METRICS, MATCH):
        return ""
    if resource_type in (GROUP, CLIENT_METRICS):
        raise KafkaError(ErrorCode.INVALID_CONFIG,
                         f"Can't {_OPERATION_NAMES[operation]} to key {key} because its type is not LIST.")
    if resource_type == TOPIC:
        setting = TOPIC_SETTINGS_BY_NAME.get(key)
        if setting is None or setting.kind != "list":
            raise KafkaError(ErrorCode.INVALID_CONFIG,
                             f"Can't {_OPERATION_NAMES[operation]} to key {key} because its type is not LIST.")
        return setting.render(setting.default) or ""
    setting = SETTINGS_BY_NAME.get(key)
    if setting is None or setting.kind != "list":
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"Config value {_OPERATION_NAMES[operation].lower()} "
                         f"is not allowed for config key: {key}")
    return setting.render(setting.default) or ""


def _apply_operations(resource_type: int, texts: dict[str, str], configs) -> dict[str, str]:
    """Kafka's incremental operations applied to a resource's current overrides."""
    texts = dict(texts)
    for config in configs:
        key, operation = config.name, config.config_operation
        if operation == SET:
            texts[key] = config.value
        elif operation == DELETE:
            texts.pop(key, None)
        elif operation in (APPEND, SUBTRACT):
            default = _list_default(resource_type, key, operation)
            items = [item for item in texts.get(key, default).split(",") if item]
            changes = config.value.split(",")
            if operation == APPEND:
                items += [item for item in dict.fromkeys(changes) if item not in items]
            else:
                items = [item for item in items if item not in changes]
            texts[key] = ",".join(items)
        else:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {operation}")
    return texts


def _check_request_shape(resource, twice: set, incremental: bool) -> None:
    """The checks Kafka's broker makes before a resource is altered at all."""
    if (resource.resource_type, resource.resource_name) in twice:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
    names = [config.name for config in resource.configs]
    if len(set(names)) != len(names):
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
    nulls = [config.name for config in resource.configs
             if config.value is None and not (incremental and config.config_operation == DELETE)]
    if nulls:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls))


def _alter_all(ctx: RequestContext, request, incremental: bool, Response):
    broker = ctx.broker
    seen: set[tuple[int, str]] = set()
    twice: set[tuple[int, str]] = set()
    for resource in request.resources:
        key = (resource.resource_type, resource.resource_name)
        (twice if key in seen else seen).add(key)
    answers = []
    for resource in request.resources:
        try:
            _check_authorized(ctx, Operation.ALTER_CONFIGS, resource)
            _check_request_shape(resource, twice, incremental)
            if incremental:
                current = _current_configs(broker, resource.resource_type, resource.resource_name)
                texts = _apply_operations(resource.resource_type, current, resource.configs)
            else:
                texts = {config.name: config.value for config in resource.configs}
            _replace_configs(broker, resource.resource_type, resource.resource_name, texts,
                             request.validate_only)
        except KafkaError as exc:
            answers.append(Response.AlterConfigsResourceResponse(
                error_code=exc.code, error_message=exc.message, resource_type=resource.resource_type,
                resource_name=resource.resource_name))
        else:
            answers.append(Response.AlterConfigsResourceResponse(
                error_code=ErrorCode.NONE, error_message=None, resource_type=resource.resource_type,
                resource_name=resource.resource_name))
    return Response(throttle_time_ms=0, responses=answers)


@serves("AlterConfigs", 0, 2)
async def handle_alter_configs(ctx: RequestContext,
                               request: AlterConfigsRequest) -> AlterConfigsResponse:
    return _alter_all(ctx, request, False, AlterConfigsResponse)


@serves("IncrementalAlterConfigs", 0, 1)
async def handle_incremental_alter_configs(
        ctx: RequestContext,
        request: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse:
    return _alter_all(ctx, request, True, IncrementalAlterConfigsResponse)


# -- ListConfigResources ---------------------------------------------------------------------

_LISTED_TYPES = {0: (CLIENT_METRICS,), 1: (TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP)}


def _resource_names(broker, resource_type: int) -> list[str]:
    if resource_type == TOPIC:
        return sorted(broker.logs.topics)
    if resource_type in (BROKER, BROKER_LOGGER):
        return [str(node) for node in broker.node_ids]
    if resource_type == GROUP:
        return broker.group_configs.groups()
    return broker.telemetry.subscriptions.names()  # CLIENT_METRICS


@serves("ListConfigResources", 0, 1)
async def handle_list_config_resources(
        ctx: RequestContext, request: ListConfigResourcesRequest) -> ListConfigResourcesResponse:
    supported = _LISTED_TYPES[ctx.api_version]
    wanted = request.resource_types or list(supported)
    if any(resource_type not in supported for resource_type in wanted):
        return ListConfigResourcesResponse(throttle_time_ms=0, error_code=ErrorCode.UNSUPPORTED_VERSION)
    Resource = ListConfigResourcesResponse.ConfigResource
    return ListConfigResourcesResponse(throttle_time_ms=0, error_code=ErrorCode.NONE, config_resources=[
        Resource(resource_name=name, resource_type=resource_type)
        for resource_type in supported if resource_type in wanted
        for name in _resource_names(ctx.broker, resource_type)])
