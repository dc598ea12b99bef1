"""The online store in Redis, for scoring replicas that share one state.

Chosen when `FRAUD_ONLINE_STORE_URL` starts with `redis://`. Sorted sets keep every window
query and update O(log n), hashes hold the running counters and sets the devices,
merchants and countries seen. Each request, single payment or batch, costs two round trips:
one server-side script reads everything its payments need, and one writes each payment
atomically (idempotency check, result and every history update together).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from fraud_assets.core.features import (
    HISTORY_MS,
    MERCHANT_WINDOWS_MS,
    FeatureSpec,
    MerchantHistory,
    UserHistory,
)
from fraud_assets.core.live_batch import HistoryBatch
from serving.store_api import (
    DEFAULT_RETENTION_DAYS,
    KIND_COUNTRY,
    KIND_DEVICE,
    KIND_MERCHANT,
    Commit,
    HistoryTables,
    OnlineStore,
    Prepared,
    PreparedBatch,
    StoredResult,
    StoreTxn,
    StoreUnavailable,
    empty_history,
    log_amounts,
    to_ms,
)

# The commit of one payment, as a Lua function of where its keys and arguments start in
# KEYS and ARGV (8 and 14 of them, as `_commit_call` makes them): idempotency check, result,
# and every history update. Floats are written with %.17g, which round-trips IEEE doubles
# exactly, so the running log-amount sums equal the offline cumulative sums bit for bit.
# Every key is passed in KEYS (never built inside the script), as Redis Cluster requires.
_COMMIT_FUNCTION = """
local function commit(ko, ao)
  local tx = KEYS[ko + 1]
  local existing = redis.call('HMGET', tx, 'p', 'f', 'r', 'v', 'm')
  if existing[1] then return existing end
  local ttl = ARGV[ao + 13]
  redis.call('HSET', tx, 'm', ARGV[ao + 1], 'ts', ARGV[ao + 2], 'p', ARGV[ao + 3],
             'f', ARGV[ao + 4], 'r', ARGV[ao + 5], 'v', ARGV[ao + 6])
  redis.call('EXPIRE', tx, ttl)
  redis.call('SET', KEYS[ko + 8], ARGV[ao + 14], 'EX', ttl)
  -- A transaction of the loaded history is counted already: only its result is new.
  if existing[5] then return false end
  local ts = tonumber(ARGV[ao + 2])
  local cut = '(' .. ARGV[ao + 12]
  local events = KEYS[ko + 3]
  redis.call('ZADD', events, ts, ARGV[ao + 7])
  redis.call('ZREMRANGEBYSCORE', events, '-inf', cut)
  local user = KEYS[ko + 2]
  local st = redis.call('HMGET', user, 'n', 'ls', 'lss', 'last')
  local x = tonumber(ARGV[ao + 8])
  local n = (tonumber(st[1]) or 0) + 1
  local ls = (tonumber(st[2]) or 0) + x
  local lss = (tonumber(st[3]) or 0) + x * x
  local last = math.max(tonumber(st[4]) or -1, ts)
  redis.call('HSET', user, 'n', string.format('%.17g', n), 'ls', string.format('%.17g', ls),
             'lss', string.format('%.17g', lss), 'last', string.format('%.17g', last))
  redis.call('SADD', KEYS[ko + 4], ARGV[ao + 9])
  redis.call('SADD', KEYS[ko + 5], ARGV[ao + 10])
  redis.call('SADD', KEYS[ko + 6], ARGV[ao + 11])
  local merchant = KEYS[ko + 7]
  redis.call('ZADD', merchant, ts, ARGV[ao + 14])
  redis.call('ZREMRANGEBYSCORE', merchant, '-inf', cut)
  return false
end
"""
# One payment, atomically, in one round trip.
_COMMIT_LUA = _COMMIT_FUNCTION + "return commit(0, 0)\n"
# Many payments in order, each atomically (the whole script is), in one round trip: KEYS and
# ARGV hold each payment's keys and arguments one after the other.
_COMMIT_MANY_LUA = (
    _COMMIT_FUNCTION
    + """
local out = {}
for i = 0, #KEYS / 8 - 1 do
  out[i + 1] = commit(i * 8, i * 14)
end
return out
"""
)
# Everything `prepare` reads of many payments, in one script: per payment its stored result,
# its customer's recent events, moments and "seen" flags, and its merchant's window counts and
# labels known. KEYS: nine a payment (`_read_keys`). ARGV: the history span, the number of
# merchant windows and their widths, then four fields a payment (ts, device, merchant,
# country).
_PREPARE_MANY_LUA = """
local history = tonumber(ARGV[1])
local nw = tonumber(ARGV[2])
local widths = {}
for w = 1, nw do widths[w] = tonumber(ARGV[2 + w]) end
local out = {}
local a = 2 + nw
for k = 0, #KEYS - 9, 9 do
  local ts = tonumber(ARGV[a + 1])
  local row = {
    redis.call('HMGET', KEYS[k + 1], 'p', 'f', 'r', 'v', 'm'),
    redis.call('ZRANGEBYSCORE', KEYS[k + 2], ts - history, ts, 'WITHSCORES'),
    redis.call('HMGET', KEYS[k + 3], 'n', 'ls', 'lss', 'last'),
    redis.call('SISMEMBER', KEYS[k + 4], ARGV[a + 2]),
    redis.call('SISMEMBER', KEYS[k + 5], ARGV[a + 3]),
    redis.call('SISMEMBER', KEYS[k + 6], ARGV[a + 4]),
  }
  local merchant = KEYS[k + 7]
  for w = 1, nw do
    row[6 + w] = redis.call('ZCOUNT', merchant, ts - widths[w], ts)
  end
  local before = '(' .. ARGV[a + 1]
  row[7 + nw] = redis.call('ZCOUNT', KEYS[k + 8], '-inf', before)
  row[8 + nw] = redis.call('ZCOUNT', KEYS[k + 9], '-inf', before)
  out[#out + 1] = row
  a = a + 4
end
return out
"""

_LABEL_LUA = """
local merchant = redis.call('HGET', KEYS[1], 'm')
if not merchant then return 0 end
local lab = ARGV[4] .. 'm:' .. merchant .. ':lab'
local fr = ARGV[4] .. 'm:' .. merchant .. ':fr'
redis.call('ZADD', lab, ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('ZADD', fr, ARGV[2], ARGV[1])
else redis.call('ZREM', fr, ARGV[1]) end
return 1
"""


class RedisOnlineStore(OnlineStore):
    """The online store in Redis: sorted sets for windows and labels, hashes for counters.

    Keys are prefixed (default `fraud:`); a transaction's result is kept for
    `retention_days` so late labels can still find its merchant.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "fraud:",
        retention_days: int = DEFAULT_RETENTION_DAYS,
        timeout_s: float = 5.0,
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.ttl_s = int(retention_days * 86_400)
        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._commit = self.client.register_script(_COMMIT_LUA)
        self._commit_many = self.client.register_script(_COMMIT_MANY_LUA)
        self._prepare_many = self.client.register_script(_PREPARE_MANY_LUA)
        self._label = self.client.register_script(_LABEL_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.url}: {exc}") from exc

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _stored(transaction_id: str, values: Sequence[Any]) -> StoredResult:
        return StoredResult(
            transaction_id=transaction_id,
            prediction_id=values[0],
            features=json.loads(values[1]),
            response=values[2] or None,
            model_version=values[3] or "",
        )

    def _read(self, txns: Sequence[StoreTxn]) -> list[list[Any]]:
        """Every payment's reads, done by one server-side script in one round trip."""
        k = self._k
        keys: list[str] = []
        args: list[Any] = [HISTORY_MS, len(MERCHANT_WINDOWS_MS), *MERCHANT_WINDOWS_MS.values()]
        for t in txns:
            u, m = t.user_id, t.merchant_id
            keys += (
                k("tx", t.transaction_id),
                k("u", u, "ev"),
                k("u", u),
                k("u", u, "dev"),
                k("u", u, "mer"),
                k("u", u, "cty"),
                k("m", m, "ev"),
                k("m", m, "lab"),
                k("m", m, "fr"),
            )
            args += (t.ts_ms, t.device_id, t.merchant_id, t.country)
        with self._guard():
            return self._prepare_many(keys=keys, args=args)  # type: ignore[no-any-return]

    def _prepared(self, txn: StoreTxn, out: Sequence[Any]) -> Prepared:
        stored, events, moments, dev, mer, cty = out[:6]
        window_counts = out[6 : 6 + len(MERCHANT_WINDOWS_MS)]
        known, fraud = out[-2:]
        if stored[0]:
            user, merchant = empty_history()
            return Prepared(user, merchant, existing=self._stored(txn.transaction_id, stored))
        # Members are "transaction_id|amount", scores the times (a flat member, score list).
        recent_ts = np.array([int(float(score)) for score in events[1::2]], dtype=np.int64)
        recent_amount = np.array(
            [float(member.rsplit("|", 1)[1]) for member in events[0::2]], dtype=np.float64
        )
        user = UserHistory(
            recent_ts=recent_ts,
            recent_amount=recent_amount,
            n=float(moments[0] or 0.0),
            log_sum=float(moments[1] or 0.0),
            log_sumsq=float(moments[2] or 0.0),
            last_ts=int(float(moments[3])) if moments[3] is not None else -1,
            seen_device=bool(dev),
            seen_merchant=bool(mer),
            seen_country=bool(cty),
        )
        counts = {
            name: float(c) for name, c in zip(MERCHANT_WINDOWS_MS, window_counts, strict=True)
        }
        merchant = MerchantHistory(counts, float(known), float(fraud))
        return Prepared(user, merchant, in_history=stored[4] is not None)

    def prepare(self, txn: StoreTxn) -> Prepared:
        return self._prepared(txn, self._read([txn])[0])

    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        """Every payment's reads in one server-side script (one round trip)."""
        out = self._read(txns)
        pairs: list[tuple[UserHistory, MerchantHistory]] = []
        existing: dict[int, StoredResult] = {}
        in_history = np.zeros(len(txns), dtype=bool)
        for i, txn in enumerate(txns):
            prepared = self._prepared(txn, out[i])
            pairs.append((prepared.user, prepared.merchant))
            in_history[i] = prepared.in_history
            if prepared.existing is not None:
                existing[i] = prepared.existing
        return PreparedBatch(HistoryBatch.from_histories(pairs), existing, in_history)

    def _commit_call(self, c: Commit, log_amount: float) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of the atomic commit script for one scored payment (`log_amount`
        from `log_amounts`)."""
        txn, prediction_id = c.txn, c.prediction_id
        u, m = txn.user_id, txn.merchant_id
        keys = [
            self._k("tx", txn.transaction_id),
            self._k("u", u),
            self._k("u", u, "ev"),
            self._k("u", u, "dev"),
            self._k("u", u, "mer"),
            self._k("u", u, "cty"),
            self._k("m", m, "ev"),
            self._k("pred", prediction_id),
        ]
        args = [
            m,
            str(txn.ts_ms),
            prediction_id,
            c.features_json(),
            c.response or "",
            c.model_version,
            f"{txn.transaction_id}|{float(txn.amount)!r}",
            repr(log_amount),
            txn.device_id,
            txn.merchant_id,
            txn.country,
            str(txn.ts_ms - HISTORY_MS),
            str(self.ttl_s),
            # The prediction's transaction, and the member of the merchant's event set.
            txn.transaction_id,
        ]
        return keys, args

    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        commit = Commit(txn, features, prediction_id, model_version, response)
        keys, args = self._commit_call(commit, log_amounts([txn.amount])[0])
        with self._guard():
            result = self._commit(keys=keys, args=args)
        if result:
            return self._stored(txn.transaction_id, result)
        return None

    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        """Every payment's atomic commit, in order, by one server-side script."""
        if not commits:
            return {}
        keys: list[str] = []
        args: list[str] = []
        logs = log_amounts([c.txn.amount for c in commits])
        for c, log_amount in zip(commits, logs, strict=True):
            k, a = self._commit_call(c, log_amount)
            keys += k
            args += a
        with self._guard():
            results = self._commit_many(keys=keys, args=args)
        return {
            c.txn.transaction_id: self._stored(c.txn.transaction_id, r)
            for c, r in zip(commits, results, strict=True)
            if r
        }

    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        if not responses:
            return
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for tid, response in responses:
                pipe.hset(self._k("tx", tid), "r", response)
            pipe.execute()

    def lookup(self, transaction_id: str) -> StoredResult | None:
        with self._guard():
            values = self.client.hmget(self._k("tx", transaction_id), "p", "f", "r", "v")
        return self._stored(transaction_id, values) if values[0] else None

    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        with self._guard():
            transaction_id = self.client.get(self._k("pred", prediction_id))
        return self.lookup(transaction_id) if transaction_id else None

    def record_label(
        self, transaction_id: str, is_fraud: bool, label_ts: datetime | pd.Timestamp | int
    ) -> bool:
        with self._guard():
            found = self._label(
                keys=[self._k("tx", transaction_id)],
                args=[transaction_id, str(to_ms(label_ts)), "1" if is_fraud else "0", self.prefix],
            )
        return bool(found)

    def bulk_load(self, history: pd.DataFrame, spec: FeatureSpec, replace: bool = True) -> int:
        hist = HistoryTables.from_frame(history, spec)
        with self._guard():
            if replace:
                self._wipe()
            pipe = self.client.pipeline(transaction=False)
            queued = 0

            def flush_if_full(force: bool = False) -> None:
                nonlocal pipe, queued
                if queued >= 5_000 or (force and queued):
                    pipe.execute()
                    pipe = self.client.pipeline(transaction=False)
                    queued = 0

            for tid, mid, ts in zip(
                hist.txn["transaction_id"].tolist(),
                hist.txn["merchant_id"].tolist(),
                hist.txn["ts_ms"].tolist(),
                strict=True,
            ):
                key = self._k("tx", tid)
                pipe.hset(key, mapping={"m": mid, "ts": str(ts)})
                pipe.expire(key, self.ttl_s)
                queued += 2
                flush_if_full()
            for user_id, n, log_sum, log_sumsq, last_ts in zip(
                *(hist.users[c].tolist() for c in hist.users.columns), strict=True
            ):
                pipe.hset(
                    self._k("u", user_id),
                    mapping={
                        "n": repr(float(n)),
                        "ls": repr(float(log_sum)),
                        "lss": repr(float(log_sumsq)),
                        "last": str(int(last_ts)),
                    },
                )
                queued += 1
                flush_if_full()
            ev = hist.user_events
            members = ev["transaction_id"] + "|" + ev["amount"].map(lambda a: repr(float(a)))
            for user_id, idx in ev.groupby("user_id", sort=False).indices.items():
                pipe.zadd(
                    self._k("u", user_id, "ev"),
                    dict(
                        zip(members.iloc[idx].tolist(), ev["ts_ms"].iloc[idx].tolist(), strict=True)
                    ),
                )
                queued += 1
                flush_if_full()
            kinds = {KIND_DEVICE: "dev", KIND_MERCHANT: "mer", KIND_COUNTRY: "cty"}
            for (user_id, kind), values in hist.seen.groupby(["user_id", "kind"], sort=False)[
                "value"
            ]:
                pipe.sadd(self._k("u", user_id, kinds[int(kind)]), *values.tolist())
                queued += 1
                flush_if_full()
            mev = hist.merchant_events
            for merchant_id, idx in mev.groupby("merchant_id", sort=False).indices.items():
                pipe.zadd(
                    self._k("m", merchant_id, "ev"),
                    dict(
                        zip(
                            mev["transaction_id"].iloc[idx].tolist(),
                            mev["ts_ms"].iloc[idx].tolist(),
                            strict=True,
                        )
                    ),
                )
                queued += 1
                flush_if_full()
            labels = hist.labels
            for merchant_id, idx in labels.groupby("merchant_id", sort=False).indices.items():
                part = labels.iloc[idx]
                for start in range(0, len(part), 10_000):
                    chunk = part.iloc[start : start + 10_000]
                    pipe.zadd(
                        self._k("m", merchant_id, "lab"),
                        dict(
                            zip(
                                chunk["transaction_id"].tolist(),
                                chunk["known_at_ms"].tolist(),
                                strict=True,
                            )
                        ),
                    )
                    fraud = chunk[chunk["is_fraud"] > 0]
                    if len(fraud):
                        pipe.zadd(
                            self._k("m", merchant_id, "fr"),
                            dict(
                                zip(
                                    fraud["transaction_id"].tolist(),
                                    fraud["known_at_ms"].tolist(),
                                    strict=True,
                                )
                            ),
                        )
                    queued += 2
                    flush_if_full()
            flush_if_full(force=True)
        return len(hist.txn)

    def _wipe(self) -> None:
        batch: list[str] = []
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)
