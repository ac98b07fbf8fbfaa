"""Client quota enforcement as Kafka's ClientQuotaManager does it: rates and throttle times.

A plain state machine (no sockets, no clock of its own): handlers record what a client did and
get the time, in ms, its connection must stay muted (KIP-219: the response goes out at once with
that throttle_time_ms, and the connection's next request is read only after it).

Rules (Kafka's ClientQuotaManager, Sensor, Rate and QuotaUtils):
 Q1. A client is known by its user principal's name (or "ANONYMOUS") and its client id. The quota
     that applies to it is the first entity, in this order, that sets the quota's key
     (producer_byte_rate, consumer_byte_rate, request_percentage):
     user+client-id, user+default client-id, user, default user+client-id, default user+default
     client-id, default user, client-id, default client-id. None: the client is not limited.
 Q2. Usage is shared by the clients the entity covers: a user quota counts all that user's
     clients together; a default entity counts each actual user (or client id) on its own.
 Q3. Usage is a rate per second over `quota.window.num` samples of `quota.window.size.seconds`:
     the sum of the samples still in the window, divided by the time since the oldest of them
     began, but by no less than (samples - 1) windows.
 Q4. After recording a value, a rate above the quota makes the throttle time
     (rate - quota) / quota * the window the rate was measured over; otherwise 0.
 Q5. A consumer over consumer_byte_rate gets an empty fetch response (its bytes taken back
     from the rate), and a fetch asks for at most what the quota allows over its window.
 Q6. request_percentage measures the time handling the client's requests took, as a percentage
     of one second (1 ms = 0.1).

Controller mutations (KIP-599, Kafka's ControllerMutationQuotaManager and TokenBucket):
 M1. controller_mutation_rate is found as Q1 and Q2 say. Each partition a CreateTopics,
     CreatePartitions or DeleteTopics creates or deletes takes one token from a bucket that
     refills at the quota per second up to a burst of quota * controller.quota.window.num *
     controller.quota.window.size.seconds tokens; a new bucket is full.
 M2. Strict (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+): a topic is refused with
     THROTTLING_QUOTA_EXCEEDED while the bucket is below zero; otherwise it is accepted and
     charged in full, even below zero. So a request is never refused for its own size: the one
     that exhausts the bucket passes, the next ones wait.
 M3. Permissive (older versions): every topic is accepted and charged.
 M4. A bucket below zero gives the throttle time -tokens / quota seconds (rounded to ms), for
     the response's throttle_time_ms and the connection's mute, less the time since it was
     computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kbroker.protocol.errors import ErrorCode, KafkaError
from kbroker.quotas import CLIENT_ID, USER, ClientQuotas, Entity

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
THROTTLING_QUOTA_MESSAGE = "The throttling quota has been exceeded."


def _precedence(user: str, client_id: str) -> list[Entity]:
    """Rule Q1's order of the entities that may set a client's quota."""
    return [((USER, user), (CLIENT_ID, client_id)), ((USER, user), (CLIENT_ID, None)),
            ((USER, user),), ((USER, None), (CLIENT_ID, client_id)),
            ((USER, None), (CLIENT_ID, None)), ((USER, None),),
            ((CLIENT_ID, client_id),), ((CLIENT_ID, None),)]


@dataclass(slots=True)
class SampledRate:
    """Rule Q3: a rate over a fixed number of time windows."""

    samples: int
    window_ms: int
    _starts: list[int] = field(default_factory=list)  # start of each sample kept, oldest first
    _values: list[float] = field(default_factory=list)

    def record(self, value: float, now_ms: int) -> None:
        if not self._starts or now_ms >= self._starts[-1] + self.window_ms:
            self._starts.append(now_ms)
            self._values.append(0.0)
        self._values[-1] += value
        self._expire(now_ms)

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.samples * self.window_ms
        while self._starts and self._starts[0] + self.window_ms <= horizon:
            del self._starts[0], self._values[0]
        while len(self._starts) > self.samples:
            del self._starts[0], self._values[0]

    def window_size_ms(self, now_ms: int) -> int:
        elapsed = now_ms - self._starts[0] if self._starts else 0
        return max(elapsed, (self.samples - 1) * self.window_ms)

    def rate(self, now_ms: int) -> float:
        self._expire(now_ms)
        return sum(self._values) * 1000 / self.window_size_ms(now_ms)

    def throttle_ms(self, quota: float, now_ms: int) -> int:
        """Rule Q4: how long usage at this rate must pause to come back to the quota."""
        observed = self.rate(now_ms)
        if observed <= quota:
            return 0
        return int((observed - quota) / quota * self.window_size_ms(now_ms))


def quota_of(store: ClientQuotas, key: str, user: str, client_id: str) -> tuple[Entity, float] | None:
    """Rule Q1, with the usage key of rule Q2 (defaults replaced by the actual names)."""
    for entity in _precedence(user, client_id):
        value = store.quotas.get(entity, {}).get(key)
        if value is not None:
            actual = {USER: user, CLIENT_ID: client_id}
            return tuple((kind, actual[kind]) for kind, _ in entity), value
    return None


class ClientQuotaManager:
    """The usage and throttle times of one quota key (e.g. producer_byte_rate) for every client."""

    def __init__(self, key: str, store: ClientQuotas, samples: int, window_ms: int):
        self.key = key
        self.store = store
        self.samples, self.window_ms = samples, window_ms
        self._rates: dict[Entity, SampledRate] = {}

    def _quota_of(self, user: str, client_id: str) -> tuple[Entity, float] | None:
        return quota_of(self.store, self.key, user, client_id)

    def max_value_in_window(self, user: str, client_id: str) -> float | None:
        """What the quota allows over its window (Kafka caps a fetch's max_bytes to it, so that a
        consumer's fetch always fits in its quota); None without a quota."""
        found = self._quota_of(user, client_id)
        return None if found is None else found[1] * (self.samples - 1) * self.window_ms / 1000

    def unrecord(self, user: str, client_id: str, value: float, now_ms: int) -> None:
        """Take back a recorded value (a throttled fetch is answered empty, its bytes not sent)."""
        found = self._quota_of(user, client_id)
        rate = None if found is None else self._rates.get(found[0])
        if rate is not None:
            rate.record(-value, now_ms)

    def record(self, user: str, client_id: str, value: float, now_ms: int) -> int:
        """Record what the client did; the ms its connection must be muted (rule Q4)."""
        found = self._quota_of(user, client_id)
        if found is None:
            return 0
        usage_key, quota = found
        rate = self._rates.get(usage_key)
        if rate is None:
            rate = self._rates[usage_key] = SampledRate(self.samples, self.window_ms)
        rate.record(value, now_ms)
        return rate.throttle_ms(quota, now_ms)


@dataclass(slots=True)
class TokenBucket:
    """Rule M1: tokens refilled at `rate` per second, up to `burst`."""

    tokens: float
    updated_ms: int

    def level(self, rate: float, burst: float, now_ms: int) -> float:
        self.tokens = min(burst, self.tokens + rate * (now_ms - self.updated_ms) / 1000)
        self.updated_ms = now_ms
        return self.tokens


class MutationQuota:
    """One request's controller_mutation_rate: charged per topic (rules M2 and M3), then asked
    for the throttle time of the response (rule M4)."""

    def __init__(self, buckets: "ControllerMutationQuotas", user: str, client_id: str, strict: bool):
        self._buckets = buckets
        self._user, self._client_id = user, client_id
        self._strict = strict
        self._throttle_ms = 0
        self._computed_ms = 0

    def charge(self, partitions: int, now_ms: int) -> None:
        """Take one token per partition; raises KafkaError (THROTTLING_QUOTA_EXCEEDED) when a
        strict quota refuses the topic."""
        found = self._buckets.bucket(self._user, self._client_id, now_ms)
        if found is None:
            return
        bucket, rate, burst = found
        tokens = bucket.level(rate, burst, now_ms)
        if self._strict and tokens < 0:
            self._throttled(tokens, rate, now_ms)
            raise KafkaError(ErrorCode.THROTTLING_QUOTA_EXCEEDED, THROTTLING_QUOTA_MESSAGE)
        bucket.tokens = tokens - partitions
        if not self._strict and bucket.tokens < 0:
            self._throttled(bucket.tokens, rate, now_ms)

    def _throttled(self, tokens: float, rate: float, now_ms: int) -> None:
        self._throttle_ms = round(-tokens / rate * 1000)
        self._computed_ms = now_ms

    def throttle_ms(self, now_ms: int) -> int:
        return max(0, self._throttle_ms - (now_ms - self._computed_ms))


class ControllerMutationQuotas:
    """The token buckets of controller_mutation_rate, one per usage entity (rule Q2)."""

    def __init__(self, store: ClientQuotas, samples: int, window_ms: int):
        self.store = store
        self._burst_seconds = samples * window_ms / 1000
        self._buckets: dict[Entity, TokenBucket] = {}

    def bucket(self, user: str, client_id: str, now_ms: int) -> tuple[TokenBucket, float, float] | None:
        """The client's bucket, refill rate and burst; None when no quota limits it."""
        found = quota_of(self.store, CONTROLLER_MUTATION_RATE, user, client_id)
        if found is None:
            return None
        usage_key, rate = found
        burst = rate * self._burst_seconds
        bucket = self._buckets.get(usage_key)
        if bucket is None:
            bucket = self._buckets[usage_key] = TokenBucket(burst, now_ms)
        return bucket, rate, burst

    def for_request(self, user: str, client_id: str, strict: bool) -> MutationQuota:
        return MutationQuota(self, user, client_id, strict)


class Throttles:
    """The quota managers of a broker: producer and consumer byte rates, request time,
    controller mutations."""

    def __init__(self, store: ClientQuotas, samples: int, window_ms: int,
                 mutation_samples: int, mutation_window_ms: int):
        self.store = store
        self.produce = ClientQuotaManager(PRODUCER_BYTE_RATE, store, samples, window_ms)
        self.fetch = ClientQuotaManager(CONSUMER_BYTE_RATE, store, samples, window_ms)
        self.request = ClientQuotaManager(REQUEST_PERCENTAGE, store, samples, window_ms)
        self.mutation = ControllerMutationQuotas(store, mutation_samples, mutation_window_ms)

    @property
    def active(self) -> bool:
        """Whether any quota is set (else nothing is measured: no cost per request)."""
        return bool(self.store.quotas)


def quota_user(principal: str) -> str:
    """The user name quotas know a principal by: User:alice is alice."""
    return principal.partition(":")[2]
