"""The child's page's form: what it shows (from the profile, or from what the parent posted when
the save was refused, so nothing typed is lost) and the profile it writes back.

Categories and apps are picked, never typed: the schedule rows post the ids of ticked chips.
Days come from a quick choice (every day, school nights, weekdays, weekends) or ticked boxes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from flask import abort

from filterd.rules.catalog import YOUTUBE_LEVELS
from filterd.rules.model import DAYS
from filterd.rules.presets import PRESETS

# Quick day choices a parent means by name; "school nights" are the evenings before a school day.
DAY_CHOICES = {
    "daily": ("Every day", DAYS),
    "school_nights": ("School nights (Sun–Thu)", ("sun", "mon", "tue", "wed", "thu")),
    "weekdays": ("Weekdays (Mon–Fri)", ("mon", "tue", "wed", "thu", "fri")),
    "weekends": ("Weekends", ("sat", "sun")),
}
YOUTUBE_NAMES = {"strict": "strict", "moderate": "moderate", "off": "none"}   # "off" read as "YouTube off"

# The sections of the page, each with its own Save button; a save returns to its section.
SECTIONS = ("today", "categories", "apps", "search", "sites", "schedules")


@dataclass
class ScheduleRow:
    name: str = ""
    days: tuple[str, ...] = DAYS
    start: str = ""
    end: str = ""
    block_all: bool = True
    items: tuple[str, ...] = ()
    delete: bool = False

    @property
    def day_choice(self) -> str:
        """The quick choice these days are, or "custom"."""
        return next((key for key, (_, days) in DAY_CHOICES.items() if set(days) == set(self.days)), "custom")


@dataclass
class Editor:
    categories: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    allow: str = ""
    block: str = ""
    safesearch: bool = False
    youtube: str = "off"
    schedules: list[ScheduleRow] = field(default_factory=list)


def _clock(minutes: int) -> str:
    return f"{(minutes // 60) % 24:02d}:{minutes % 60:02d}"


def from_profile(profile) -> Editor:
    return Editor(
        categories=tuple(profile.block_categories), services=tuple(profile.block_services),
        allow="\n".join(profile.allow), block="\n".join(profile.block), safesearch=profile.safesearch,
        youtube=profile.youtube,
        schedules=[ScheduleRow(s.name, tuple(d for i, d in enumerate(DAYS) if i in s.days), _clock(s.start),
                               _clock(s.end), s.block_all, tuple(s.block)) for s in profile.schedules])


def from_form(form) -> Editor:
    """What the parent posted, as the page shows it again (a refused save keeps every value)."""
    rows = []
    for i in range(_count(form) + 1):
        name = form.get(f"schedule-{i}-name", "").strip()
        if not name and i == _count(form):
            continue                      # the empty "add a schedule" row
        choice = form.get(f"schedule-{i}-days", "custom")
        if choice in DAY_CHOICES:
            days = DAY_CHOICES[choice][1]
        else:
            days = tuple(d for d in DAYS if form.get(f"schedule-{i}-{d}")) or DAYS
        rows.append(ScheduleRow(name, days, form.get(f"schedule-{i}-start", ""), form.get(f"schedule-{i}-end", ""),
                                form.get(f"schedule-{i}-what", "all") == "all",
                                tuple(v for v in form.getlist(f"schedule-{i}-item") if v),
                                bool(form.get(f"schedule-{i}-delete"))))
    youtube = form.get("youtube", "off")
    return Editor(
        categories=tuple(c.strip() for c in form.getlist("category") if c.strip()),
        services=tuple(s.strip() for s in form.getlist("service") if s.strip()),
        allow=form.get("allow", ""), block=form.get("block", ""), safesearch=form.get("safesearch") == "on",
        youtube=youtube if youtube in YOUTUBE_LEVELS else "off", schedules=rows)


MAX_SCHEDULE_ROWS = 200     # far more than a week needs; bounds the loop over a hand-made form


def _count(form) -> int:
    """The editor's hidden row count. Anything but a small number is a damaged or hand-made form
    (Wapiti sent SQL payloads and huge numbers): refused with 400, never a 500 from int(), a loop
    over a billion rows, nor a save that silently drops the rows it could not count."""
    count = form.get("schedule_count", "").strip() or "0"
    if not re.fullmatch(r"[0-9]{1,4}", count) or int(count) > MAX_SCHEDULE_ROWS:
        abort(400, description="The week editor's form was damaged (schedule_count). Reload the page and try again.")
    return int(count)


def write(editor: Editor, body: dict, current) -> None:
    """The editor's values into the profile's YAML mapping, keeping the parent's intent:

    - a key whose value did not change is not touched (kept byte for byte, compact YAML too), and
      keys the page does not edit (limits, preset) are kept;
    - with a `preset:`, categories and apps are stored as what differs from the preset
      (`block_categories_add` / `_remove`, `block_services_add` / `_remove`), and `safesearch`,
      `youtube` only when they differ from it, so a later change of the preset still applies;
    - without a preset, the lists are written as they are.
    `current` is the profile as parsed now (what "unchanged" is measured against)."""
    preset = PRESETS.get(body.get("preset") or "")
    for key, wanted in (("block_categories", editor.categories), ("block_services", editor.services)):
        if set(wanted) == set(getattr(current, key)):
            continue
        if preset is None:
            body[key] = list(wanted)
            continue
        base = list(preset.get(key, []))
        body.pop(key, None)                   # an explicit list replaced the preset's: back to relative
        for suffix, items in (("_add", [i for i in wanted if i not in base]),
                              ("_remove", [i for i in base if i not in wanted])):
            if items:
                body[key + suffix] = items
            else:
                body.pop(key + suffix, None)
    for key, text in (("allow", editor.allow), ("block", editor.block)):
        if tuple(_lines(text)) != tuple(getattr(current, key)):
            body[key] = _lines(text)
    for key, wanted in (("safesearch", editor.safesearch), ("youtube", editor.youtube)):
        if wanted == getattr(current, key):
            continue
        if preset is not None and wanted == preset.get(key):
            body.pop(key, None)
        else:
            body[key] = wanted
    schedules = _written(editor.schedules)
    if _unordered(schedules) != _unordered(_written(from_profile(current).schedules)):
        body["schedules"] = schedules


def _written(rows: list[ScheduleRow]) -> list[dict]:
    return [{"name": row.name, "days": list(row.days), "start": row.start, "end": row.end,
             "block": "all" if row.block_all or not row.items else list(row.items)}
            for row in rows if row.name and not row.delete]


def _unordered(schedules: list[dict]) -> list[dict]:
    """Schedules compared as they act: [sun, mon] and [mon, sun] are the same nights."""
    return [{**item, "days": sorted(item["days"], key=DAYS.index)} for item in schedules]


def preset_changes(profile, catalog) -> list[str]:
    """What a profile based on a preset does differently, as the parent reads it ("+ Games blocked")."""
    preset = PRESETS.get(profile.preset or "")
    if preset is None:
        return []
    out = []
    for key, names in (("block_categories", catalog.categories), ("block_services", catalog.services)):
        base, now = list(preset.get(key, [])), list(getattr(profile, key))
        out += [f"+ {names[i].name if i in names else i} blocked" for i in now if i not in base]
        out += [f"− {names[i].name if i in names else i} allowed" for i in base if i not in now]
    if profile.safesearch != preset.get("safesearch"):
        out.append(f"SafeSearch {'on' if profile.safesearch else 'off'}")
    if profile.youtube != preset.get("youtube"):
        out.append(f"YouTube filter: {YOUTUBE_NAMES.get(profile.youtube, profile.youtube)}")
    return out


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


_SCHEDULE_PATH = re.compile(r"schedules\[(\d+)\]")


def field_of(path: str | None, profile: str, editor: Editor) -> str:
    """The element id a config error belongs beside: profiles.kids.schedules[1].start →
    schedule-1 (its row on the page: deleted rows are not written, so the indexes differ),
    profiles.kids.allow[2] → allow; anything else → form (shown on top only)."""
    if not path:
        return "form"
    prefix = f"profiles.{profile}."
    rest = path[len(prefix):] if path.startswith(prefix) else path
    match = _SCHEDULE_PATH.match(rest)
    if match:
        written = [i for i, row in enumerate(editor.schedules) if row.name and not row.delete]
        index = int(match.group(1))
        return f"schedule-{written[index]}" if index < len(written) else "schedules"
    key = re.sub(r"_(add|remove)$", "", rest.split(".")[0].split("[")[0])   # block_categories_add[0] → block_categories
    return {"block_categories": "categories", "block_services": "apps", "allow": "allow", "block": "block",
            "youtube": "search", "safesearch": "search", "version": "version"}.get(key, "form")


def person(name: str) -> str:
    """A profile id as a name people read: emma → Emma, new-devices → New devices."""
    text = name.replace("-", " ").replace("_", " ").strip()
    return text[:1].upper() + text[1:]


_TYPED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.'-]{0,63}")


def profile_id(name: str) -> str:
    """A name typed by a parent ("Leo", "Mia Rose") → the profile's id (leo, mia-rose); "" for
    a name with other characters ("<b>x</b>", "Emma!"), which the page refuses."""
    if not _TYPED_NAME.fullmatch(name.strip()):
        return ""
    return re.sub(r"[^a-z0-9_.-]+", "-", name.strip().lower()).strip("-_.")[:64]


def problems(editor: Editor) -> dict[str, str]:
    """What the page itself can tell before the config check: a schedule row without its times,
    or "some" ticked with nothing chosen."""
    out: dict[str, str] = {}
    for i, row in enumerate(editor.schedules):
        if not row.name or row.delete:
            continue
        if not row.start or not row.end:
            out[f"schedule-{i}"] = f"{row.name}: set when it starts and when it ends."
        elif not row.block_all and not row.items:
            out[f"schedule-{i}"] = f"{row.name}: tick the categories and apps it blocks, or choose Everything."
    return out
