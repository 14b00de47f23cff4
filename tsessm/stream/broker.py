"""Streams over a broker: Redis Streams consumer groups as source and sink (and the shape of a Kafka one).

    tsessm stream --model panel.tsm --id-col sensor --checkpoint ckpt0/ \\
        --input 'redis://127.0.0.1:6379/0?stream=obs&partitions=4&group=fcst' --partition 0/2 \\
        --output 'redis://127.0.0.1:6379/0?stream=forecasts'

**Partitioning: each series has exactly one owner.** A producer writes each record to the
partition stream of its series, `KEY:p` with `p = crc32(str(id)) % P` (`partition_of`; `KEY`
itself when P = 1); `publish` does it. Runner `i` of `N` (`--partition i/N`) owns the partitions
`p` with `p % N == i` and reads only those, in the consumer group `G`. So one series' records
only ever reach one runner, in the order they were written, and its state lives in that runner's
checkpoint. The assignment is static: runner i/N keeps its --checkpoint folder (moving a
partition to another runner means moving that folder with it). A lease guards it: a runner
holds `KEY:lease:p` (value: its consumer name, a TTL of 30 s refreshed while it runs) for each
partition it owns; a second runner that claims a held partition under another consumer name is
refused at start (exit 2). A runner restarted under its own name takes its lease straight back.

**Acknowledging.** Entries are read with `XREADGROUP` (they enter the consumer's pending list)
and acknowledged with `XACK` only after a checkpoint that covers them: the runner calls
`source.commit(upto)` after each checkpoint, with the number of the last record the checkpoint
includes. A record that stopped the stream (`--on-bad-record error`) is not covered and stays
pending.

**Resuming.** A restarted runner first claims every entry still pending in its partitions
(`XAUTOCLAIM`, so a predecessor under another consumer name is covered too), re-reads them
(`XREADGROUP ... 0`), then reads new entries (`>`). A re-read entry that the checkpoint already
includes has a timestamp at or before its series' last one and is skipped as a replay; one
applied after the checkpoint (a kill -9 between apply and checkpoint) is applied again, since
the state came back from the checkpoint. Nothing is lost or applied twice; output lines after the
last checkpoint may be written again, identical.

**Output.** `RedisStreamSink` appends one entry per forecast line to a stream: fields `id` (the
series id as text, empty for none), `time` and `data` (the JSON line `tsessm stream` prints).
Delivery is at-least-once: deduplicate by (`id`, `time`) -- a repeated pair carries the same
line. Writes are pipelined and flushed before each checkpoint (`sync`), so a checkpoint never
covers a line not yet in Redis. Redis keeps what it acknowledged as durably as its persistence
settings say (appendonly/appendfsync): a runner cannot do better than its broker.

**Entries.** One record per entry: a field `data` holding a JSON object (the JSON-lines format,
known-ahead values included), or the record's fields themselves as strings (like CSV).

**Other brokers.** A source is any `BrokerSource`: it yields `Record`s and has
`commit(upto)` and `close()`. The base class below keeps the bookkeeping (record numbers,
what to acknowledge, idle timeout, stop); a broker adds four hooks:

    _recover()        -> iterable of (partition, message id, fields): entries to re-read first
    _fetch(timeout)   -> list of (partition, message id, fields): new entries, waiting <= timeout s
    _ack({partition: [message ids]})   acknowledge entries the last checkpoint covers
    _close()          release what it holds

A Kafka source (confluent-kafka) is that small: `assign` the topic's partitions p with
p % N == i (static, as here, rather than the group's rebalancing, so a series keeps its owner
and its checkpoint), `enable.auto.commit=false`; `_recover` yields nothing (Kafka redelivers
from the committed offset), `_fetch` is `consumer.consume(timeout=...)`, `_ack` commits
offset + 1 of the last message per partition (`consumer.commit(offsets=..., asynchronous=False)`),
and the producer keys each message by series id (`partition_of` or Kafka's own key hash).
"""
from __future__ import annotations

import json
import socket
import time
import zlib
from collections import deque
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tsessm.stream.sinks import format_line
from tsessm.stream.sources import Record, Stopper, _parse_json

__all__ = ["BrokerSource", "RedisStreamSource", "RedisStreamSink", "partition_of", "stream_key", "parse_part",
           "is_broker_url", "with_query", "publish", "DATA_FIELD"]

SCHEMES = ("redis", "rediss")
DATA_FIELD = "data"  # an entry holding one JSON record
DEFAULT_GROUP = "tsessm"
# the query parameters read here; any other one goes to redis-py's from_url (socket_timeout, ...)
SOURCE_KEYS = ("stream", "group", "consumer", "partitions", "part", "batch", "block", "lease", "start", "idle")
SINK_KEYS = ("stream", "maxlen")

_LEASE_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def is_broker_url(value: Any) -> bool:
    """Whether `value` names a broker stream (redis:// or rediss://)."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in SCHEMES and "://" in value


def partition_of(series_id: Any, partitions: int) -> int:
    """The partition of a series: crc32 of its id as text, modulo `partitions`. Stable across
    processes and machines (unlike Python's salted hash()); the ids 7 and "7" share one."""
    return zlib.crc32(str(series_id).encode("utf-8")) % partitions


def stream_key(key: str, partition: int, partitions: int) -> str:
    """The stream holding partition `partition` of `key`: `key` itself when there is one partition."""
    return key if partitions == 1 else f"{key}:{partition}"


def parse_part(text: str) -> tuple[int, int]:
    """`i/N` -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"a partition must be i/N (runner i of N, counted from 0), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"a partition i/N needs 0 <= i < N, got {text!r}")
    return i, n


def with_query(url: str, **params: Any) -> str:
    """`url` with the given query parameters set (None values left out)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: str(v) for k, v in params.items() if v is not None})
    return urlunsplit(parts._replace(query=urlencode(query)))


def _split_url(url: str, keys: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """(the connection URL for redis-py, our parameters) from a redis:// URL."""
    if not is_broker_url(url):
        raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
    parts = urlsplit(url)
    ours, theirs = {}, []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(k, v) if k in keys else theirs.append((k, v)))
    if not ours.get("stream"):
        raise ValueError(f"the broker URL needs the stream's key: add ?stream=KEY ({_public(url)})")
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _public(url: str) -> str:
    """The URL without credentials (for names and messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _number(params: dict, key: str, default: float, kind: type = float, minimum: float = 0) -> Any:
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except ValueError:
        raise ValueError(f"broker URL: {key}={params[key]!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"broker URL: {key} must be at least {minimum}, got {params[key]!r}")
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _connect(url: str) -> Any:
    import redis  # the client loads only for a broker stream

    return redis.Redis.from_url(url)


class BrokerSource:
    """Records from a broker; the runner calls `commit(upto)` after each checkpoint, `close()` at the end.

    Not positional: a restart resumes from what the broker still holds for this consumer, and
    the runner tells replays by their timestamps. Records are numbered 1, 2, ... in this run.
    """

    positional = False

    def __init__(self, name: str, *, idle_timeout: float | None = None, poll: float = 1.0) -> None:
        self.name = name
        self.idle_timeout, self.poll = idle_timeout, poll
        self.skip_until = 0  # (positional sources only)
        self.stopper = Stopper()
        self.idle = False
        self.count = 0  # records delivered in this run
        self.redelivered = 0  # of which re-read from the pending list at start
        self.acked = 0
        self._delivered: deque[tuple[int, Any, Any]] = deque()  # (record number, partition, message id)
        self._started = False

    # ----- what a broker supplies -----------------------------------------------------------
    def _recover(self) -> Iterable[tuple[Any, Any, Any]]:
        return ()

    def _fetch(self, timeout: float) -> list[tuple[Any, Any, Any]]:
        raise NotImplementedError

    def _ack(self, done: dict[Any, list[Any]]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    # ----- the runner's side ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        self._started = True
        for partition, message_id, fields in self._recover():
            if self.stopper.is_set():
                return
            record = self._deliver(partition, message_id, fields)
            if record is not None:
                self.redelivered += 1
                yield record
        last_data = time.monotonic()
        while not self.stopper.is_set():
            wait = self.poll
            if self.idle_timeout is not None:
                left = self.idle_timeout - (time.monotonic() - last_data)
                if left <= 0:
                    self.idle = True
                    return
                wait = min(wait, left)
            batch = self._fetch(wait)
            for partition, message_id, fields in batch:
                record = self._deliver(partition, message_id, fields)
                if record is not None:
                    yield record
                if self.stopper.is_set():  # the rest of the batch stays pending: read again next start
                    return
            if batch:  # idle means waiting with nothing to read: the clock starts after the batch
                last_data = time.monotonic()

    def _deliver(self, partition: Any, message_id: Any, fields: Any) -> Record | None:
        if fields is None:  # deleted from the stream (trimmed) while pending: nothing to apply
            self._delivered.append((self.count, partition, message_id))  # acked with the record before it
            return None
        self.count += 1
        self._delivered.append((self.count, partition, message_id))
        return entry_record(self.count, fields, where=f"{_text(partition)} {_text(message_id)}")

    def commit(self, upto: int) -> None:
        """Acknowledge the records numbered <= `upto` (a checkpoint now includes them)."""
        done: dict[Any, list[Any]] = {}
        while self._delivered and self._delivered[0][0] <= upto:
            _, partition, message_id = self._delivered.popleft()
            done.setdefault(partition, []).append(message_id)
        if done:
            self._ack(done)
            self.acked += sum(len(ids) for ids in done.values())

    def close(self) -> None:
        self._close()


def entry_record(number: int, fields: dict, where: str = "") -> Record:
    """A broker entry's fields (bytes or text) as a Record: one JSON object under `data`, or the fields."""
    try:
        decoded = {_text(k): _text(v) for k, v in fields.items()}
    except UnicodeDecodeError as exc:
        return Record(number, None, f"entry {where}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if set(decoded) == {DATA_FIELD}:
        record = _parse_json(number, decoded[DATA_FIELD])
        if record.error is not None:
            record.error = f"entry {where}: {record.error}"
        return record
    return Record(number, decoded)


class RedisStreamSource(BrokerSource):
    """The partitions `p % N == i` of `KEY` (see the module docstring), read in a consumer group.

    url: redis://[user:password@]host:port/db?stream=KEY&group=G&consumer=C&partitions=P&part=i/N
        stream      the key (required); partition p is the stream KEY:p (KEY itself when P = 1)
        group       the consumer group (default tsessm), created at the stream's start when missing
        consumer    this runner's name in the group (default <host>-runner-i); keep it across restarts
        partitions  P, as the producer wrote them (default 1)
        part        i/N: this runner's share (default 0/1: every partition)
        batch       entries per read (default 100)
        block       seconds one read waits for new entries (default 1; a stop is seen between reads)
        lease       seconds a partition lease lasts without renewal (default 30; 0: no lease)
        start       where a new group starts: 0 (the whole stream, default) or $ (new entries only)
        idle        stop cleanly after this many seconds without a new entry (default: never)
      any other parameter goes to redis-py (socket_timeout=5, ...).
    Keyword arguments override the URL's parameters.
    """

    def __init__(self, url: str, *, group: str | None = None, consumer: str | None = None,
                 partitions: int | None = None, part: str | None = None, idle_timeout: float | None = None,
                 client: Any = None) -> None:
        conn_url, p = _split_url(with_query(url, group=group, consumer=consumer, partitions=partitions, part=part),
                                 SOURCE_KEYS)
        self.key = p["stream"]
        self.group = p.get("group") or DEFAULT_GROUP
        self.partitions = _number(p, "partitions", 1, int, 1)
        self.part = parse_part(p.get("part", "0/1"))
        # per host by default: the same --partition started on a second machine finds the lease
        # held by another name and is refused; a restart on this machine takes it back
        self.consumer = p.get("consumer") or f"{socket.gethostname()}-runner-{self.part[0]}"
        self.batch = _number(p, "batch", 100, int, 1)
        self.lease_ms = int(_number(p, "lease", 30.0) * 1000)
        self.start = p.get("start", "0")
        if self.start not in ("0", "$"):
            raise ValueError(f"broker URL: start must be 0 or $, got {self.start!r}")
        if idle_timeout is None and "idle" in p:
            idle_timeout = _number(p, "idle", 0.0) or None
        i, n = self.part
        self.owned = [q for q in range(self.partitions) if q % n == i]
        if not self.owned:
            raise ValueError(f"--partition {i}/{n} owns none of the {self.partitions} partitions of {self.key!r} "
                             "(give the stream at least as many partitions as runners)")
        self.streams = [stream_key(self.key, q, self.partitions) for q in self.owned]
        name = f"{_public(conn_url).split('?')[0]}?stream={self.key}&group={self.group}&part={i}/{n}"
        super().__init__(name, idle_timeout=idle_timeout, poll=_number(p, "block", 1.0))
        import redis

        self._redis_error = redis.RedisError
        self.client = client if client is not None else _connect(conn_url)
        self._leases = {s: f"{self.key}:lease:{q}" for s, q in zip(self.streams, self.owned)}
        self._lease_at = 0.0
        try:
            for s in self.streams:
                try:
                    self.client.xgroup_create(s, self.group, id=self.start, mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._renew_leases(starting=True)
        except redis.RedisError as exc:
            raise OSError(f"broker {self.name}: {type(exc).__name__}: {exc}") from None

    # ----- leases ---------------------------------------------------------------------------
    def _renew_leases(self, starting: bool = False) -> None:
        if not self.lease_ms:
            return
        for s, lease in self._leases.items():
            if not self.client.eval(_LEASE_SCRIPT, 1, lease, self.consumer, self.lease_ms):
                holder = self.client.get(lease)
                holder = _text(holder) if holder is not None else "?"
                ttl = self.client.pttl(lease)
                what = (f"partition {s} is held by consumer {holder!r} of another runner "
                        f"(lease expires in {max(ttl, 0) / 1000:.0f} s)")
                if starting:
                    raise ValueError(f"{what}; each partition has one owner: check --partition and --consumer")
                raise RuntimeError(f"lost the lease: {what}; stopping without acknowledging more")
        self._lease_at = time.monotonic()

    def _keep_leases(self) -> None:
        if self.lease_ms and (time.monotonic() - self._lease_at) * 1000 > self.lease_ms / 3:
            self._renew_leases()

    # ----- the hooks ------------------------------------------------------------------------
    def _recover(self) -> Iterator[tuple[Any, Any, Any]]:
        for s in self.streams:
            cursor = "0-0"
            while True:  # entries a predecessor (under any consumer name) read and never acknowledged
                reply = self.client.xautoclaim(s, self.group, self.consumer, 0, start_id=cursor, count=self.batch)
                cursor = _text(reply[0])
                if cursor == "0-0":
                    break
            last = "0"
            while True:  # now this consumer's pending entries, oldest first
                self._keep_leases()
                reply = self.client.xreadgroup(self.group, self.consumer, {s: last}, count=self.batch)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                for message_id, fields in entries:
                    yield s, message_id, fields
                last = _text(entries[-1][0])

    def _fetch(self, timeout: float) -> list[tuple[Any, Any, Any]]:
        self._keep_leases()
        reply = self.client.xreadgroup(self.group, self.consumer, {s: ">" for s in self.streams},
                                       count=self.batch, block=max(1, int(timeout * 1000)))
        return [(_text(s), message_id, fields) for s, entries in (reply or []) for message_id, fields in entries]

    def _ack(self, done: dict[Any, list[Any]]) -> None:
        self._keep_leases()
        pipe = self.client.pipeline(transaction=False)
        for s, ids in done.items():
            for k in range(0, len(ids), 1000):
                pipe.xack(s, self.group, *ids[k:k + 1000])
        pipe.execute()

    def _close(self) -> None:
        try:
            if self._started and self.lease_ms:  # a runner that never read leaves a live owner's lease alone
                for lease in self._leases.values():
                    self.client.eval(_RELEASE_SCRIPT, 1, lease, self.consumer)
        except self._redis_error:
            pass  # the lease expires by itself
        finally:
            self.client.close()


class RedisStreamSink:
    """Forecast lines appended to a Redis stream (XADD): fields id, time, data (the JSON line).

    url: redis://host:port/db?stream=OUT[&maxlen=N] (maxlen: trim the stream to about N entries).
    Writes are pipelined and sent at `sync()` (before each checkpoint), every `flush_every` lines
    and at `close()`. At-least-once: deduplicate by (id, time).
    """

    def __init__(self, url: str, *, client: Any = None, flush_every: int = 100) -> None:
        conn_url, p = _split_url(url, SINK_KEYS)
        self.key = p["stream"]
        self.maxlen = _number(p, "maxlen", 0, int, 1) or None
        self.name = f"{_public(conn_url).split('?')[0]}?stream={self.key}"
        self.client = client if client is not None else _connect(conn_url)
        try:
            self.client.ping()
        except Exception as exc:  # redis.RedisError: the client loads lazily
            raise OSError(f"broker {self.name}: {type(exc).__name__}: {exc}") from None
        self.flush_every = flush_every
        self._pipe = self.client.pipeline(transaction=False)
        self._pending = 0

    def write(self, line: dict) -> None:
        sid = line.get("id")
        fields = {"id": "" if sid is None else str(sid), "time": line["time"], DATA_FIELD: format_line(line)}
        self._pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
        self._pending += 1
        if self._pending >= self.flush_every:
            self.sync()

    def sync(self) -> None:
        if self._pending:
            self._pipe.execute()
            self._pending = 0

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self.client.close()


def publish(url: str, records: Iterable[dict], *, id_col: str | None = None, stream: str | None = None,
            partitions: int | None = None, client: Any = None) -> int:
    """Append records (dicts, JSON-able) to the partition streams of their series; returns how many.

    url: redis://host:port/db?stream=KEY&partitions=P (or `stream=`, `partitions=` here). Each
    record goes, as one JSON object under `data`, to `KEY:partition_of(record[id_col], P)`
    (`KEY` when P = 1; partition 0 without `id_col`), in the order given.
    """
    conn_url, p = _split_url(with_query(url, stream=stream, partitions=partitions), SOURCE_KEYS)
    key, n = p["stream"], _number(p, "partitions", 1, int, 1)
    own = client is None
    client = _connect(conn_url) if own else client
    count = 0
    try:
        pipe = client.pipeline(transaction=False)
        for record in records:
            q = partition_of(record[id_col], n) if id_col is not None else 0
            pipe.xadd(stream_key(key, q, n), {DATA_FIELD: json.dumps(record, allow_nan=False)})
            count += 1
            if count % 1000 == 0:
                pipe.execute()
        pipe.execute()
    finally:
        if own:
            client.close()
    return count
