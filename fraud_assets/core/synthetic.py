"""Deterministic synthetic card-not-present e-commerce transactions with planted fraud.

The generator builds a small world (users with a home country, usual devices, preferred
merchants and a heavy-tailed activity level; merchants with a category and a popularity),
draws genuine transactions with a daily and weekly rhythm, and plants fraud patterns that a
model can learn from behavioural features without reaching a perfect score:

* ``card_testing``: bursts of 5-20 tiny amounts on one card within minutes, mostly at
  digital-goods merchants, from a device the user never used;
* ``account_takeover``: a new device in a foreign country, then several high amounts within
  hours;
* ``compromised_merchant``: one or two merchants where, for several days, most transactions
  are fraud;
* ``amount_outlier``: single amounts far above what the user normally spends;
* ``drift_pattern`` (only with ``drift=True``): mid-amount fraud at gaming merchants from the
  users' usual devices, spread over the late period.

About 2% of the fraud is label noise: genuine-looking transactions labelled fraud (pattern
``"none"``). Genuine users also travel and buy new devices, so no single signal is decisive.

Every random component draws from its own child stream of ``np.random.SeedSequence(seed)``,
so switching one knob (``bias``, ``drift``) does not reshuffle unrelated components.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORIES",
    "COUNTRIES",
    "PATTERNS",
    "SyntheticConfig",
    "generate",
    "generate_with_truth",
    "main",
    "write",
]

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR

CATEGORIES: tuple[str, ...] = (
    "electronics",
    "fashion",
    "grocery",
    "travel",
    "digital_goods",
    "gaming",
    "home",
    "beauty",
    "sports",
    "food_delivery",
)
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
_CATEGORY_WEIGHTS = np.array([0.10, 0.16, 0.12, 0.06, 0.10, 0.08, 0.10, 0.10, 0.08, 0.10])
_CATEGORY_MEDIAN = np.array([180.0, 60.0, 45.0, 300.0, 12.0, 20.0, 80.0, 35.0, 70.0, 28.0])
_CATEGORY_SIGMA = np.array([0.9, 0.7, 0.6, 0.8, 0.8, 0.9, 0.8, 0.6, 0.7, 0.4])
_ATO_CATEGORIES = np.array([_CAT["electronics"], _CAT["travel"], _CAT["fashion"]])

COUNTRIES: tuple[str, ...] = ("DE", "FR", "GB", "US", "NL", "ES", "IT", "IE", "BE", "AT")
_COUNTRY_WEIGHTS = np.array([0.20, 0.15, 0.15, 0.15, 0.07, 0.08, 0.08, 0.04, 0.04, 0.04])
_CURRENCIES: tuple[str, ...] = ("EUR", "USD", "GBP")
_COUNTRY_CURRENCY = np.array([0, 0, 2, 1, 0, 0, 0, 0, 0, 0])

_DEVICE_TYPES: tuple[str, ...] = ("mobile", "desktop", "tablet")
_FIRST_DEVICE_P = (0.60, 0.30, 0.10)
_OTHER_DEVICE_P = (0.40, 0.40, 0.20)
_FRAUD_DEVICE_P = (0.35, 0.60, 0.05)
_APP_SHARE = np.array([0.65, 0.03, 0.45])
_CHANNELS: tuple[str, ...] = ("web", "app")
_GENDERS: tuple[str, ...] = ("F", "M")

PATTERNS: tuple[str, ...] = (
    "none",
    "card_testing",
    "account_takeover",
    "compromised_merchant",
    "amount_outlier",
    "drift_pattern",
)
_P = {name: np.int8(i) for i, name in enumerate(PATTERNS)}

_WEEKDAY_HOURS = np.array(
    [0.9, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.6, 2.4, 2.8, 3.0, 3.3,
     3.8, 3.6, 3.3, 3.3, 3.6, 4.2, 5.0, 6.0, 6.6, 6.2, 4.4, 2.2]
)  # fmt: skip
_WEEKEND_HOURS = np.array(
    [1.4, 0.9, 0.5, 0.3, 0.2, 0.2, 0.4, 0.8, 1.6, 2.6, 3.6, 4.2,
     4.4, 4.3, 4.2, 4.2, 4.3, 4.6, 5.0, 5.6, 6.0, 5.6, 4.2, 2.6]
)  # fmt: skip
# Fraudsters work around the clock and favour the hours when victims sleep.
_FRAUD_HOURS = np.array(
    [3.0, 3.2, 3.4, 3.2, 2.8, 2.2, 1.6, 1.4, 1.5, 1.7, 1.8, 1.9,
     2.0, 2.0, 1.9, 1.9, 2.0, 2.1, 2.3, 2.5, 2.6, 2.7, 2.8, 2.9]
)  # fmt: skip
_WEEKEND_DAY_WEIGHT = 1.2

_PREFERRED = 8
_PREFERRED_SHARE = 0.85
_TRAVELLER_SHARE = 0.05
_NEW_DEVICE_SHARE = 0.06
_NEW_DEVICE_USE = 0.7
_LABEL_NOISE = 0.02
_LABEL_DELAY_SIGMA = 0.6
_PATTERN_SHARES = {
    "card_testing": 0.30,
    "account_takeover": 0.25,
    "compromised_merchant": 0.22,
    "amount_outlier": 0.23,
}
_DRIFT_PATTERN_SHARE = 0.15

_STREAMS: tuple[str, ...] = (
    "population",
    "merchants",
    "lifestyle",
    "genuine_time",
    "genuine_pick",
    "genuine_amount",
    "genuine_device",
    "bias",
    "drift",
    "card_testing",
    "account_takeover",
    "compromised_merchant",
    "amount_outlier",
    "drift_pattern",
    "noise",
    "labels",
    "names",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the same config always yields the same frame.

    Attributes:
        n_transactions: Exact number of rows.
        n_users: Number of users; default ``n_transactions // 40`` (at least 200).
        n_merchants: Number of regular merchants; default ``max(50, n_transactions // 2000)``.
        start: First UTC day, e.g. ``"2026-06-01"``.
        days: Length of the span in days.
        seed: Seed of every random draw.
        fraud_rate: Target share of fraud rows (the realised share is close to it).
        fraud_label_delay_days: Median delay until a fraud label (chargeback) is known;
            delays are lognormal around it.
        genuine_label_delay_days: Maturity window after which a genuine label is known.
        bias: 0 (none) to 1 (strong): genuine users under 30 use new devices, foreign
            countries and night hours more often, in proportion to ``bias``.
        drift: Shift the period after ``drift_start_fraction`` of the span (amounts, merchant
            mix, channel and device mix, and a new fraud pattern).
        drift_start_fraction: Where the late period begins, as a fraction of the span.
        drift_strength: Scales the drift effects (amounts grow by ``1 + 0.6 * strength``).
    """

    n_transactions: int = 200_000
    n_users: int | None = None
    n_merchants: int | None = None
    start: str = "2026-06-01"
    days: int = 60
    seed: int = 42
    fraud_rate: float = 0.01
    fraud_label_delay_days: float = 7.0
    genuine_label_delay_days: float = 30.0
    bias: float = 0.0
    drift: bool = False
    drift_start_fraction: float = 0.8
    drift_strength: float = 1.0

    @property
    def resolved_users(self) -> int:
        """Number of users: ``n_users`` or one per 40 transactions (at least 200)."""
        return self.n_users if self.n_users is not None else max(200, self.n_transactions // 40)

    @property
    def resolved_merchants(self) -> int:
        """Number of regular merchants: ``n_merchants`` or one per 2000 transactions (>= 50)."""
        if self.n_merchants is not None:
            return self.n_merchants
        return max(50, self.n_transactions // 2000)

    def validate(self) -> None:
        """Raise ``ValueError`` for a config the generator cannot honour."""
        checks = {
            "n_transactions must be >= 1000": self.n_transactions >= 1000,
            "n_users must be >= 10": self.resolved_users >= 10,
            "n_merchants must be >= len(CATEGORIES)": self.resolved_merchants >= len(CATEGORIES),
            "days must be >= 7": self.days >= 7,
            "fraud_rate must be in (0, 0.1]": 0.0 < self.fraud_rate <= 0.1,
            "label delays must be > 0": min(
                self.fraud_label_delay_days, self.genuine_label_delay_days
            )
            > 0,
            "bias must be in [0, 1]": 0.0 <= self.bias <= 1.0,
            "drift_start_fraction must be in (0, 1)": 0.0 < self.drift_start_fraction < 1.0,
            "drift_strength must be >= 0": self.drift_strength >= 0.0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))


class _DeviceBook:
    """Device ids are positions in this book, so freshly issued devices never collide."""

    def __init__(self, types: np.ndarray) -> None:
        self._chunks: list[np.ndarray] = [types.astype(np.int8)]
        self.size = len(types)

    def fresh(self, rng: np.random.Generator, n: int, p_types: tuple[float, ...]) -> np.ndarray:
        """Issue ``n`` devices nobody has used before and return their ids."""
        types = rng.choice(len(_DEVICE_TYPES), size=n, p=p_types).astype(np.int8)
        ids = np.arange(self.size, self.size + n, dtype=np.int64)
        self._chunks.append(types)
        self.size += n
        return ids

    def types(self) -> np.ndarray:
        """Device type code of every device issued so far."""
        return np.concatenate(self._chunks)


@dataclass
class _World:
    """Users, devices and merchants shared by all transaction components."""

    home: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    activity: np.ndarray
    spend: np.ndarray
    dev_offset: np.ndarray
    dev_count: np.ndarray
    mobile_dev: np.ndarray
    preferred: np.ndarray
    trip_start: np.ndarray
    trip_end: np.ndarray
    trip_country: np.ndarray
    new_device_at: np.ndarray
    new_device_id: np.ndarray
    merchant_category: np.ndarray
    merchant_pop: np.ndarray
    merchant_traffic: np.ndarray
    new_merchant_pop: np.ndarray
    n_regular: int
    devices: _DeviceBook

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.home)


@dataclass
class _Rows:
    """One component's transactions; ``ts`` is milliseconds after the start."""

    ts: np.ndarray
    user: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    device: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    pattern: np.ndarray
    fraud: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        """All parts stacked in order."""
        names = cls.__dataclass_fields__
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in names})

    def take(self, order: np.ndarray) -> _Rows:
        """Rows reordered (or selected) by ``order``."""
        names = self.__dataclass_fields__
        return _Rows(**{k: getattr(self, k)[order] for k in names})


@dataclass(frozen=True)
class _Span:
    """Time frame of the data in milliseconds after the start."""

    start: pd.Timestamp
    end_ms: int
    warm_ms: int
    drift_ms: int
    weekend: np.ndarray


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Normalised cumulative distribution of non-negative weights."""
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Inverse-CDF sampling; ``rng.choice(p=...)`` does the same but re-normalises every call."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per component, all derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(_STREAMS, children, strict=True)}


def _foreign(rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
    """A uniformly chosen country different from ``home`` (element-wise)."""
    return (home + rng.integers(1, len(COUNTRIES), size=len(home))) % len(COUNTRIES)


def _times_in_window(
    rng: np.random.Generator,
    lo: np.ndarray | int,
    hi: np.ndarray | int,
    hour_cdf: np.ndarray,
    n: int,
) -> np.ndarray:
    """Times in ``[lo, hi)`` that follow an hour-of-day profile (rejection sampling)."""
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.int64), (n,))
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.int64), (n,))
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(64):
        if todo.size == 0:
            break
        lo_t, hi_t = lo_a[todo], hi_a[todo]
        day = rng.integers(lo_t // MS_PER_DAY, (hi_t - 1) // MS_PER_DAY + 1)
        hour = _draw(rng, hour_cdf, todo.size)
        t = day * MS_PER_DAY + hour * MS_PER_HOUR + rng.integers(0, MS_PER_HOUR, todo.size)
        ok = (t >= lo_t) & (t < hi_t)
        out[todo[ok]] = t[ok]
        todo = todo[~ok]
    if todo.size:
        out[todo] = rng.integers(lo_a[todo], hi_a[todo])
    return out


def _channels(rng: np.random.Generator, device_type: np.ndarray, boost: np.ndarray) -> np.ndarray:
    """Channel codes (0 web, 1 app); ``boost`` raises the app share on mobile and tablet."""
    app_p = np.minimum(_APP_SHARE[device_type] + boost * (device_type != 1), 0.97)
    return (rng.random(len(device_type)) < app_p).astype(np.int8)


def _currencies(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """Mostly the country's currency; some shops price cross-border carts in another one."""
    currency = _COUNTRY_CURRENCY[country]
    other = rng.random(len(country)) < 0.07
    shifted = (currency + rng.integers(1, len(_CURRENCIES), size=len(country))) % len(_CURRENCIES)
    return np.where(other, shifted, currency)


def _make_span(config: SyntheticConfig) -> _Span:
    """The UTC start (midnight of ``config.start``) and the derived time marks."""
    start = pd.Timestamp(config.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    start = start.normalize()
    end_ms = config.days * MS_PER_DAY
    weekend = ((start.dayofweek + np.arange(config.days)) % 7) >= 5
    return _Span(
        start=start,
        end_ms=end_ms,
        warm_ms=int(min(3 * MS_PER_DAY, end_ms // 10)),
        drift_ms=int(config.drift_start_fraction * end_ms),
        weekend=weekend,
    )


def _mirror_categories(pop: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Categories for newcomers (most popular first) whose traffic mix mirrors ``target``.

    Mirroring keeps the category mix stable under drift, so the late amount shift is the
    intended ``1 + 0.6 * strength`` rather than an accident of which categories the newcomers
    sell. Gaming is always present because the drift fraud pattern targets it.
    """
    target = target / target.sum()
    assigned = np.zeros_like(target)
    out = np.empty(len(pop), dtype=np.int64)
    for j, share in enumerate(pop):
        out[j] = int(np.argmax(target - assigned))
        assigned[out[j]] += share
    if not (out == _CAT["gaming"]).any():
        out[-1] = _CAT["gaming"]
    return out


def _build_world(
    config: SyntheticConfig, span: _Span, rs: dict[str, np.random.Generator]
) -> _World:
    """Users, their devices, habits and trips, and the regular and drift-era merchants."""
    rng = rs["population"]
    n_users = config.resolved_users
    home = _draw(rng, _cdf(_COUNTRY_WEIGHTS), n_users)
    gender = rng.integers(0, 2, size=n_users).astype(np.int8)
    age = np.round(np.clip(18.0 + rng.gamma(2.0, 11.0, size=n_users), 18.0, 90.0), 1)
    activity = np.minimum(rng.lognormal(0.0, 1.0, size=n_users), 40.0)
    activity /= activity.sum()
    spend = rng.lognormal(0.0, 0.45, size=n_users)
    dev_count = _draw(rng, _cdf(np.array([0.45, 0.38, 0.17])), n_users) + 1
    dev_offset = np.concatenate([[0], np.cumsum(dev_count)[:-1]])
    n_dev = int(dev_count.sum())
    slot = np.arange(n_dev) - np.repeat(dev_offset, dev_count)
    dev_types = np.where(
        slot == 0,
        _draw(rng, _cdf(np.array(_FIRST_DEVICE_P)), n_dev),
        _draw(rng, _cdf(np.array(_OTHER_DEVICE_P)), n_dev),
    )
    no_mobile = np.iinfo(np.int64).max
    candidates = np.where(dev_types == 0, np.arange(n_dev), no_mobile)
    mobile_dev = np.minimum.reduceat(candidates, dev_offset)
    mobile_dev[mobile_dev == no_mobile] = -1
    devices = _DeviceBook(dev_types)

    rng = rs["merchants"]
    n_reg = config.resolved_merchants
    category = _draw(rng, _cdf(_CATEGORY_WEIGHTS), n_reg)
    category[: len(CATEGORIES)] = np.arange(len(CATEGORIES))
    pop = rng.lognormal(0.0, 1.1, size=n_reg)
    pop /= pop.sum()
    preferred = _draw(rng, _cdf(pop), n_users * _PREFERRED).reshape(n_users, _PREFERRED)
    traffic = (
        _PREFERRED_SHARE
        * np.bincount(
            preferred.ravel(),
            weights=np.repeat(activity / _PREFERRED, _PREFERRED),
            minlength=n_reg,
        )
        + (1.0 - _PREFERRED_SHARE) * pop
    )
    n_new = max(10, n_reg // 8)
    new_pop = 1.0 / np.arange(1, n_new + 1) ** 0.5
    new_pop /= new_pop.sum()
    category_traffic = np.bincount(category, weights=traffic, minlength=len(CATEGORIES))
    new_category = _mirror_categories(new_pop, category_traffic)

    # Travel and new devices are drawn independently of age and gender so that, with bias=0,
    # no genuine behaviour depends on a protected attribute.
    rng = rs["lifestyle"]
    traveller = rng.random(n_users) < _TRAVELLER_SHARE
    trip_len = (rng.uniform(3.0, 10.0, size=n_users) * MS_PER_DAY).astype(np.int64)
    trip_start = rng.integers(0, max(1, span.end_ms - 3 * MS_PER_DAY), size=n_users)
    trip_country = _foreign(rng, home)
    adopter = rng.random(n_users) < _NEW_DEVICE_SHARE
    adopt_at = rng.integers(span.warm_ms, span.end_ms, size=n_users)
    new_device_id = np.full(n_users, -1, dtype=np.int64)
    new_device_id[adopter] = devices.fresh(rng, int(adopter.sum()), _FIRST_DEVICE_P)

    return _World(
        home=home,
        gender=gender,
        age=age,
        activity=activity,
        spend=spend,
        dev_offset=dev_offset,
        dev_count=dev_count,
        mobile_dev=mobile_dev,
        preferred=preferred,
        trip_start=np.where(traveller, trip_start, -1),
        trip_end=np.where(traveller, trip_start + trip_len, -1),
        trip_country=trip_country,
        new_device_at=np.where(adopter, adopt_at, np.iinfo(np.int64).max),
        new_device_id=new_device_id,
        merchant_category=np.concatenate([category, new_category]),
        merchant_pop=pop,
        merchant_traffic=traffic,
        new_merchant_pop=new_pop,
        n_regular=n_reg,
        devices=devices,
    )


def _usual_device(world: _World, user: np.ndarray, r: np.ndarray) -> np.ndarray:
    """One of the user's usual devices; the first one dominates."""
    count = world.dev_count[user]
    first_cut = np.array([np.inf, np.inf, 0.75, 0.65])[count]
    second_cut = np.array([np.inf, np.inf, np.inf, 0.90])[count]
    return world.dev_offset[user] + (r > first_cut) + (r > second_cut)


def _genuine(
    config: SyntheticConfig,
    span: _Span,
    world: _World,
    rs: dict[str, np.random.Generator],
    n: int,
) -> _Rows:
    """``n`` genuine transactions, including the bias and drift behaviour the config asks for."""
    rng = rs["genuine_pick"]
    user = _draw(rng, _cdf(world.activity), n)
    from_preferred = rng.random(n) < _PREFERRED_SHARE
    slot = rng.integers(0, _PREFERRED, size=n)
    anywhere = _draw(rng, _cdf(world.merchant_pop), n)
    merchant = np.where(from_preferred, world.preferred[user, slot], anywhere)

    rng = rs["genuine_time"]
    day_weights = np.where(span.weekend, _WEEKEND_DAY_WEIGHT, 1.0)
    day = _draw(rng, _cdf(day_weights), n)
    u = rng.random(n)
    hour = np.where(
        span.weekend[day],
        np.searchsorted(_cdf(_WEEKEND_HOURS), u, side="right"),
        np.searchsorted(_cdf(_WEEKDAY_HOURS), u, side="right"),
    )
    hour = np.minimum(hour, 23)
    within = rng.integers(0, MS_PER_HOUR, size=n)

    # The bias stream is always drawn in full so that bias=0 and bias>0 share every other draw.
    rng_bias = rs["bias"]
    young = world.age[user] < 30.0
    r_night, r_device, r_abroad = rng_bias.random((3, n))
    night = young & (r_night < 0.25 * config.bias)
    hour = np.where(night, rng_bias.integers(0, 6, size=n), hour)
    ts = day.astype(np.int64) * MS_PER_DAY + hour * MS_PER_HOUR + within

    late = (ts >= span.drift_ms) if config.drift else np.zeros(n, dtype=bool)
    strength = config.drift_strength
    rng_drift = rs["drift"]
    if config.drift:
        to_new = late & (rng_drift.random(n) < min(0.9, 0.45 * strength))
        new_merchant = world.n_regular + _draw(rng_drift, _cdf(world.new_merchant_pop), n)
        merchant = np.where(to_new, new_merchant, merchant)

    rng = rs["genuine_amount"]
    category = world.merchant_category[merchant]
    amount = (
        _CATEGORY_MEDIAN[category]
        * world.spend[user]
        * np.exp(_CATEGORY_SIGMA[category] * rng.standard_normal(n))
    )
    if config.drift:
        amount = np.where(late, amount * (1.0 + 0.6 * strength), amount)
    amount = np.maximum(np.round(amount, 2), 0.5)

    rng = rs["genuine_device"]
    device = _usual_device(world, user, rng.random(n))
    adopted = (ts >= world.new_device_at[user]) & (rng.random(n) < _NEW_DEVICE_USE)
    device = np.where(adopted, world.new_device_id[user], device)
    if config.drift:
        mobile = world.mobile_dev[user]
        to_mobile = late & (mobile >= 0) & (rng_drift.random(n) < min(0.95, 0.5 * strength))
        device = np.where(to_mobile, mobile, device)
    borrowed = young & (r_device < 0.15 * config.bias)
    device[borrowed] = world.devices.fresh(rng_bias, int(borrowed.sum()), _FIRST_DEVICE_P)

    country = world.home[user]
    on_trip = (ts >= world.trip_start[user]) & (ts < world.trip_end[user])
    country = np.where(on_trip, world.trip_country[user], country)
    abroad = young & (r_abroad < 0.08 * config.bias)
    country = np.where(abroad, _foreign(rng_bias, country), country)

    boost = np.where(late, 0.3 * min(1.0, strength), 0.0)
    channel = _channels(rng, world.devices.types()[device], boost)
    return _Rows(
        ts=ts,
        user=user,
        merchant=merchant,
        amount=amount,
        device=device,
        country=country,
        channel=channel,
        pattern=np.full(n, _P["none"], dtype=np.int8),
        fraud=np.zeros(n, dtype=np.int8),
    )


def _expand(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event index of every row and the position of the row inside its event."""
    event = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return event, np.arange(int(sizes.sum())) - starts[event]


def _offsets_within(event: np.ndarray, position: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Cumulative gap since the event's first row (the first row's own gap is ignored)."""
    gaps = np.where(position == 0, 0, gaps).astype(np.int64)
    total = np.cumsum(gaps)
    first = np.flatnonzero(position == 0)
    return total - total[first][event]


def _in_categories(world: _World, categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regular merchants of the given categories and their popularity CDF."""
    ids = np.flatnonzero(np.isin(world.merchant_category[: world.n_regular], categories))
    return ids, _cdf(world.merchant_pop[ids])


def _card_testing(span: _Span, world: _World, rng: np.random.Generator, budget: float) -> _Rows:
    """Bursts of 5-20 tiny amounts on one card from one new device within minutes."""
    n_ev = max(2, round(budget / 12.5))
    sizes = rng.integers(5, 21, size=n_ev)
    event, position = _expand(sizes)
    total = len(event)
    # Card numbers are bought in bulk, so the victim does not depend on how active the user is.
    victim = rng.integers(0, world.n_users, size=n_ev)
    start = _times_in_window(rng, 0, span.end_ms - MS_PER_HOUR, _cdf(_FRAUD_HOURS), n_ev)
    gaps = rng.exponential(25_000.0, size=total) + 2_000.0
    ts = start[event] + _offsets_within(event, position, gaps)
    dg_ids, dg_cdf = _in_categories(world, np.array([_CAT["digital_goods"]]))
    at_digital = rng.random(n_ev) < 0.85
    merchant = np.where(
        at_digital, dg_ids[_draw(rng, dg_cdf, n_ev)], _draw(rng, _cdf(world.merchant_pop), n_ev)
    )
    abroad = rng.random(n_ev) < 0.6
    country = np.where(abroad, _foreign(rng, world.home[victim]), world.home[victim])
    device = world.devices.fresh(rng, n_ev, _FRAUD_DEVICE_P)
    return _Rows(
        ts=ts,
        user=victim[event],
        merchant=merchant[event],
        amount=np.round(rng.uniform(0.5, 5.0, size=total), 2),
        device=device[event],
        country=country[event],
        channel=(rng.random(total) < 0.1).astype(np.int8),
        pattern=np.full(total, _P["card_testing"], dtype=np.int8),
        fraud=np.ones(total, dtype=np.int8),
    )


def _account_takeover(span: _Span, world: _World, rng: np.random.Generator, budget: float) -> _Rows:
    """A probe from a new device abroad, then 2-6 high amounts within hours."""
    n_ev = max(2, round(budget / 5.0))
    sizes = 1 + rng.integers(2, 7, size=n_ev)
    event, position = _expand(sizes)
    total = len(event)
    victim = _draw(rng, _cdf(world.activity), n_ev)
    start = _times_in_window(rng, span.warm_ms, span.end_ms - MS_PER_DAY, _cdf(_FRAUD_HOURS), n_ev)
    gaps = rng.exponential(35 * 60_000.0, size=total) + 60_000.0
    ts = start[event] + _offsets_within(event, position, gaps)
    ids, cdf = _in_categories(world, _ATO_CATEGORIES)
    merchant = ids[_draw(rng, cdf, total)]
    category = world.merchant_category[merchant]
    user = victim[event]
    usual = _CATEGORY_MEDIAN[category] * world.spend[user]
    # The first transaction only checks that the account works; the cash-out follows.
    factor = np.where(
        position == 0,
        np.exp(0.5 * rng.standard_normal(total)),
        rng.uniform(3.0, 9.0, size=total),
    )
    device = world.devices.fresh(rng, n_ev, _FRAUD_DEVICE_P)
    country = _foreign(rng, world.home[victim])
    return _Rows(
        ts=ts,
        user=user,
        merchant=merchant,
        amount=np.maximum(np.round(usual * factor, 2), 0.5),
        device=device[event],
        country=country[event],
        channel=(rng.random(total) < 0.3).astype(np.int8),
        pattern=np.full(total, _P["account_takeover"], dtype=np.int8),
        fraud=np.ones(total, dtype=np.int8),
    )


def _compromised_merchant(
    span: _Span,
    world: _World,
    rng: np.random.Generator,
    budget: float,
    n_genuine: int,
    days: int,
) -> _Rows:
    """Fraud at one or two merchants over a window of 4-8 days, 45-70% of their traffic."""
    n_merchants = 2 if budget >= 200 else 1
    rows = np.full(n_merchants, max(5, round(budget / n_merchants)), dtype=np.int64)
    window = (rng.uniform(4.0, 8.0, size=n_merchants) * MS_PER_DAY).astype(np.int64)
    fraud_share = rng.uniform(0.45, 0.7, size=n_merchants)
    # Pick merchants whose expected genuine volume in the window gives the wanted fraud share.
    traffic = world.merchant_traffic
    expected = traffic[None, :] * n_genuine * (window[:, None] / (days * MS_PER_DAY))
    wanted = rows * (1.0 - fraud_share) / fraud_share
    distance = np.abs(np.log(expected + 1e-9) - np.log(wanted[:, None]))
    chosen: list[int] = []
    for k in range(n_merchants):
        distance[k, chosen] = np.inf
        chosen.append(int(np.argmin(distance[k])))
    merchants = np.array(chosen)
    latest = np.maximum(span.end_ms - window, span.warm_ms + 1)
    opens = rng.integers(span.warm_ms, latest)
    event, _ = _expand(rows)
    total = len(event)
    merchant = merchants[event]
    lo = opens[event]
    ts = _times_in_window(rng, lo, lo + window[event], _cdf(_WEEKDAY_HOURS), total)
    user = rng.integers(0, world.n_users, size=total)
    category = world.merchant_category[merchant]
    amount = (
        1.6
        * _CATEGORY_MEDIAN[category]
        * world.spend[user]
        * np.exp(_CATEGORY_SIGMA[category] * rng.standard_normal(total))
    )
    on_new = rng.random(total) < 0.5
    device = world.dev_offset[user].copy()
    device[on_new] = world.devices.fresh(rng, int(on_new.sum()), _FRAUD_DEVICE_P)
    abroad = rng.random(total) < 0.15
    country = np.where(abroad, _foreign(rng, world.home[user]), world.home[user])
    channel = _channels(rng, world.devices.types()[device], np.zeros(total))
    return _Rows(
        ts=ts,
        user=user,
        merchant=merchant,
        amount=np.maximum(np.round(amount, 2), 0.5),
        device=device,
        country=country,
        channel=channel,
        pattern=np.full(total, _P["compromised_merchant"], dtype=np.int8),
        fraud=np.ones(total, dtype=np.int8),
    )


def _amount_outlier(span: _Span, world: _World, rng: np.random.Generator, budget: float) -> _Rows:
    """Single amounts 8-25 times what the user usually spends in that category."""
    n = max(3, round(budget))
    user = _draw(rng, _cdf(world.activity), n)
    ts = _times_in_window(rng, span.warm_ms, span.end_ms, _cdf(_WEEKDAY_HOURS), n)
    merchant = world.preferred[user, rng.integers(0, _PREFERRED, size=n)]
    category = world.merchant_category[merchant]
    amount = _CATEGORY_MEDIAN[category] * world.spend[user] * rng.uniform(8.0, 25.0, size=n)
    on_new = rng.random(n) < 0.2
    device = world.dev_offset[user].copy()
    device[on_new] = world.devices.fresh(rng, int(on_new.sum()), _FRAUD_DEVICE_P)
    channel = _channels(rng, world.devices.types()[device], np.zeros(n))
    return _Rows(
        ts=ts,
        user=user,
        merchant=merchant,
        amount=np.round(amount, 2),
        device=device,
        country=world.home[user],
        channel=channel,
        pattern=np.full(n, _P["amount_outlier"], dtype=np.int8),
        fraud=np.ones(n, dtype=np.int8),
    )


def _drift_pattern(span: _Span, world: _World, rng: np.random.Generator, budget: float) -> _Rows:
    """Mid-amount gaming fraud from usual devices at home, spread over the late period."""
    n = max(5, round(budget))
    user = _draw(rng, _cdf(world.activity), n)
    ts = _times_in_window(rng, span.drift_ms, span.end_ms, _cdf(_WEEKDAY_HOURS), n)
    gaming = _CAT["gaming"]
    old_ids, old_cdf = _in_categories(world, np.array([gaming]))
    new_ids = world.n_regular + np.flatnonzero(world.merchant_category[world.n_regular :] == gaming)
    new_cdf = _cdf(world.new_merchant_pop[new_ids - world.n_regular])
    merchant = np.where(
        rng.random(n) < 0.5, new_ids[_draw(rng, new_cdf, n)], old_ids[_draw(rng, old_cdf, n)]
    )
    device = _usual_device(world, user, rng.random(n))
    channel = _channels(rng, world.devices.types()[device], np.full(n, 0.3))
    return _Rows(
        ts=ts,
        user=user,
        merchant=merchant,
        amount=np.round(rng.lognormal(np.log(120.0), 0.35, size=n), 2),
        device=device,
        country=world.home[user],
        channel=channel,
        pattern=np.full(n, _P["drift_pattern"], dtype=np.int8),
        fraud=np.ones(n, dtype=np.int8),
    )


def _names(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded string ids, e.g. ``t0000000123``, as an object array."""
    return np.array([f"{prefix}{i:0{width}d}" for i in numbers.tolist()], dtype=object)


def generate_with_truth(
    config: SyntheticConfig = SyntheticConfig(),
) -> tuple[pd.DataFrame, np.ndarray]:
    """The transactions and, aligned with its rows, the planted pattern of every row.

    The second element is a string array with one of ``PATTERNS`` per row. ``"none"`` marks
    genuine rows and also the ~2% label-noise fraud that looks genuine (``is_fraud == 1``).
    """
    config.validate()
    rs = _streams(config.seed)
    span = _make_span(config)
    world = _build_world(config, span, rs)

    n = config.n_transactions
    target = config.fraud_rate * n
    shares = dict(_PATTERN_SHARES)
    if config.drift:
        shares = {k: v * (1.0 - _DRIFT_PATTERN_SHARE) for k, v in shares.items()}
        shares["drift_pattern"] = _DRIFT_PATTERN_SHARE
    planted_target = target * (1.0 - _LABEL_NOISE)
    budget = {k: v * planted_target for k, v in shares.items()}

    fraud_parts = [
        _card_testing(span, world, rs["card_testing"], budget["card_testing"]),
        _account_takeover(span, world, rs["account_takeover"], budget["account_takeover"]),
        _amount_outlier(span, world, rs["amount_outlier"], budget["amount_outlier"]),
    ]
    if config.drift:
        drift_rows = _drift_pattern(span, world, rs["drift_pattern"], budget["drift_pattern"])
        fraud_parts.append(drift_rows)
    planted_so_far = sum(len(p.ts) for p in fraud_parts)
    fraud_parts.append(
        _compromised_merchant(
            span,
            world,
            rs["compromised_merchant"],
            budget["compromised_merchant"],
            n - planted_so_far - round(budget["compromised_merchant"]),
            config.days,
        )
    )
    n_planted = sum(len(p.ts) for p in fraud_parts)
    n_genuine = n - n_planted
    if n_genuine < n // 2:
        raise ValueError("fraud_rate too high for n_transactions")
    genuine = _genuine(config, span, world, rs, n_genuine)
    n_noise = max(1, round(n_planted * _LABEL_NOISE / (1.0 - _LABEL_NOISE)))
    noisy = rs["noise"].choice(n_genuine, size=n_noise, replace=False)
    genuine.fraud[noisy] = 1

    rows = _Rows.concat([genuine, *fraud_parts])
    # Per-row draws happen before sorting so that they stay attached to the same rows when a knob
    # moves other rows in time.
    rng = rs["labels"]
    currency = _currencies(rng, rows.country)
    delay_days = np.where(
        rows.fraud == 1,
        config.fraud_label_delay_days * np.exp(_LABEL_DELAY_SIGMA * rng.standard_normal(n)),
        config.genuine_label_delay_days,
    )
    delay_ms = np.round(delay_days * MS_PER_DAY).astype(np.int64)
    order = np.argsort(rows.ts, kind="stable")
    rows = rows.take(order)
    frame = _to_frame(span, world, rows, currency[order], delay_ms[order], rs["names"])
    # Only JSON-serialisable values: pyarrow stores attrs as JSON in the parquet metadata.
    frame.attrs = {"source": "synthetic", "config": asdict(config)}
    truth = np.asarray(PATTERNS)[rows.pattern]
    return frame, truth


def _to_frame(
    span: _Span,
    world: _World,
    rows: _Rows,
    currency: np.ndarray,
    delay_ms: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """The sorted rows as a frame with the canonical column names, order and dtypes."""
    n = len(rows.ts)
    label_ms = rows.ts + delay_ms
    start_ns = span.start.value
    # Device numbers are scrambled so that ids do not reveal which devices were issued to fraud;
    # an affine map modulo 10**8 (multiplier coprime to 10) is a bijection that, unlike a
    # permutation, does not depend on how many devices exist, so the bias knob leaves the ids
    # of unaffected rows alone.
    multiplier = int(rng.integers(1, 10**7)) * 10 + int(rng.choice([1, 3, 7, 9]))
    shift = int(rng.integers(0, 10**8))
    device_numbers = (np.arange(world.devices.size) * multiplier + shift) % 10**8
    n_reg = world.n_regular
    merchant_names = np.concatenate(
        [
            _names("m", np.arange(n_reg), 5),
            _names("M_new_", np.arange(len(world.merchant_category) - n_reg), 3),
        ]
    )
    user_names = _names("u", np.arange(world.n_users), 7)
    frame = pd.DataFrame(
        {
            "transaction_id": _names("t", np.arange(n), 10),
            "timestamp": pd.to_datetime(start_ns + rows.ts * 1_000_000, unit="ns", utc=True),
            "user_id": user_names[rows.user],
            "merchant_id": merchant_names[rows.merchant],
            "merchant_category": np.asarray(CATEGORIES, dtype=object)[
                world.merchant_category[rows.merchant]
            ],
            "amount": rows.amount.astype(np.float64),
            "currency": np.asarray(_CURRENCIES, dtype=object)[currency],
            "device_id": _names("d", device_numbers, 8)[rows.device],
            "device_type": np.asarray(_DEVICE_TYPES, dtype=object)[
                world.devices.types()[rows.device]
            ],
            "channel": np.asarray(_CHANNELS, dtype=object)[rows.channel],
            "country": np.asarray(COUNTRIES, dtype=object)[rows.country],
            "gender": np.asarray(_GENDERS, dtype=object)[world.gender[rows.user]],
            "age": world.age[rows.user].astype(np.float64),
            "is_fraud": rows.fraud.astype(np.int8),
            "label_timestamp": pd.to_datetime(start_ns + label_ms * 1_000_000, unit="ns", utc=True),
        }
    )
    return frame


def generate(config: SyntheticConfig = SyntheticConfig()) -> pd.DataFrame:
    """Synthetic transactions in the canonical schema, sorted by timestamp then id."""
    return generate_with_truth(config)[0]


def write(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV if the name ends in ``.csv`` (or ``.csv.gz``), else as parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ".csv" in path.suffixes:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: generate a dataset, write it and print one summary line."""
    parser = argparse.ArgumentParser(
        prog="python -m fraud_assets.core.synthetic",
        description="Generate synthetic card-not-present transactions with planted fraud.",
    )
    parser.add_argument("--rows", type=int, default=SyntheticConfig.n_transactions)
    parser.add_argument("--days", type=int, default=SyntheticConfig.days)
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    parser.add_argument("--drift", action="store_true", help="shift the late period")
    parser.add_argument("--bias", type=float, default=0.0, help="0 (none) to 1 (strong)")
    parser.add_argument("--out", type=Path, required=True, help=".parquet or .csv")
    args = parser.parse_args(argv)
    config = SyntheticConfig(
        n_transactions=args.rows, days=args.days, seed=args.seed, drift=args.drift, bias=args.bias
    )
    began = time.perf_counter()
    try:
        frame = generate(config)
    except ValueError as error:
        parser.error(str(error))
    generated = time.perf_counter()
    path = write(frame, args.out)
    written = time.perf_counter()
    first, last = frame["timestamp"].iloc[0], frame["timestamp"].iloc[-1]
    print(  # noqa: T201
        f"rows={len(frame)} fraud_rate={frame['is_fraud'].mean():.3%} "
        f"span={first:%Y-%m-%dT%H:%M:%SZ}..{last:%Y-%m-%dT%H:%M:%SZ} "
        f"seconds={written - began:.2f} (generate {generated - began:.2f}, "
        f"write {written - generated:.2f}) out={path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
