"""Chart geometry for server-rendered SVG: numbers here, markup (escaped) in the templates."""
from __future__ import annotations

from dataclasses import dataclass

PALETTE = ["#2f6fde", "#e0803a", "#3aa676", "#b04fc4", "#d4b23a", "#4fb3c4", "#c44f6d", "#7a7a7a"]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class HourChart:
    width: int
    height: int
    bars: list[Bar]
    blocked: list[Bar]
    ticks: list[tuple[float, str]]
    legend: list[tuple[str, str]]
    peak: int


def hourly(rows: list[tuple[int, str, int, int]], start_hour: int, hours: int, tz, width: int = 720,
           height: int = 180) -> HourChart:
    """Stacked bars of queries per hour and device, with the blocked share drawn over them."""
    devices = sorted({device for _, device, _, _ in rows})
    colours = {device: PALETTE[i % len(PALETTE)] for i, device in enumerate(devices)}
    per_hour: dict[int, dict[str, tuple[int, int]]] = {}
    for hour_ts, device, queries, blocked in rows:
        per_hour.setdefault(int(hour_ts // 3600), {})[device] = (queries, blocked)
    totals = [sum(q for q, _ in per_hour.get(start_hour + i, {}).values()) for i in range(hours)]
    peak = max(totals + [1])
    slot = width / hours
    bars, blocked_bars, ticks = [], [], []
    import datetime
    for i in range(hours):
        hour = start_hour + i
        y = height
        blocked_total = 0
        for device in devices:
            queries, blocked = per_hour.get(hour, {}).get(device, (0, 0))
            if not queries:
                continue
            h = queries / peak * (height - 10)
            y -= h
            bars.append(Bar(i * slot + 1, y, slot - 2, h, colours[device], f"{device}: {queries} queries"))
            blocked_total += blocked
        if blocked_total:
            h = blocked_total / peak * (height - 10)
            blocked_bars.append(Bar(i * slot + slot / 3, height - h, slot / 3, h, "#c0392b",
                                    f"{blocked_total} blocked"))
        moment = datetime.datetime.fromtimestamp(hour * 3600, tz)
        if moment.hour % 6 == 0:
            ticks.append((i * slot, f"{moment:%H}:00"))
    return HourChart(width, height, bars, blocked_bars, ticks, [(d, colours[d]) for d in devices], peak)


@dataclass(frozen=True)
class Share:
    label: str
    value: int
    width_pct: float
    colour: str


def shares(items: list[tuple[str, int]]) -> list[Share]:
    """Horizontal bars (e.g. blocks by category), widest = 100 %."""
    top = max([v for _, v in items] + [1])
    return [Share(label, value, round(value / top * 100, 1), PALETTE[i % len(PALETTE)])
            for i, (label, value) in enumerate(items)]
