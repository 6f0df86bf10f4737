"""Dates, datetimes and times as they travel as labels (see :mod:`sandbox.codec_labels`), and time zones' names,
checked.

A ``datetime.date`` travels as its ISO text (``{"date": ...}``); a ``datetime.datetime`` (``{"datetime": ...}``) and a
``datetime.time`` (``{"time": ...}``) as their ISO text without a zone, exactly as ``isoformat()`` writes it, beside a
``"fold": 1`` if they have one and their zone if they have one: a ``zoneinfo.ZoneInfo`` by its key (``"zone"``), a
``datetime.timezone`` by its offset in microseconds (``"offset"``) and the name it was given, if any (``"tzname"``).
A datetime or time of another zone (dateutil's, pytz's, a ZoneInfo read from a file) is no label: None here.

The host reads each as hostile input: the text exactly as ``isoformat()`` writes it, in ASCII, then parsed (the
pattern lets a 13th month and a 25th hour through); a fold of 1 or none; a zone's key that names no file (pandas'
reader and zoneinfo open what a key names), read by zoneinfo; an offset within a day, a name of at most
MAX_TZNAME_CHARS. What comes back is the value that was sent, zone and fold included.
"""

from __future__ import annotations

import datetime
import re
import sys
from typing import Any, Callable

from .errors import CallError

#: The longest name of a ``datetime.timezone`` that travels (``timezone(offset, "IST")``).
MAX_TZNAME_CHARS = 64

#: A time zone's name as pandas writes it ("Europe/Paris", "UTC+01:00", "dateutil/Europe/Paris") and a ZoneInfo's key:
#: no leading "/", no ".", so no path: pandas' reader opened and parsed any regular file a "dateutil//<path>" zone
#: named.
_ZONE = re.compile(r"[A-Za-z0-9_+:\-]{1,40}(/[A-Za-z0-9_+:\-]{1,40}){0,4}")
#: ISO texts as isoformat() writes them, in ASCII (``\d`` takes any script's digits; fromisoformat() also reads
#: "1030", "10:30", "10:30:01,5" and a zone's offset).
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_CLOCK = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?")
_ISO_DATETIME = re.compile(_ISO_DATE.pattern + "T" + _ISO_CLOCK.pattern)
#: A zone's offset (in microseconds) must be within a day, as datetime.timezone's.
_DAY_US = 86_400 * 10 ** 6


def is_zone_name(zone: Any) -> bool:
    """Whether ``zone`` is a time zone's name as pandas writes one, or a ZoneInfo's key (no file's path)."""
    return isinstance(zone, str) and _ZONE.fullmatch(zone) is not None


def check_zone(zone: Any) -> None:
    """Refuses a time zone name that is not one pandas writes (a file's path is not)."""
    if not is_zone_name(zone):
        raise CallError(f"the worker returned a table with the time zone {str(zone)[:80]!r}")


def date_out(day: datetime.date) -> dict[str, Any]:
    """A ``datetime.date`` as it travels (not a datetime: its time and zone would be lost)."""
    return {"date": day.isoformat()}


def clock_out(value: datetime.datetime | datetime.time) -> dict[str, Any] | None:
    """A ``datetime.datetime`` or ``datetime.time`` as it travels, or None if its zone does not travel."""
    kind = "datetime" if isinstance(value, datetime.datetime) else "time"
    sent: dict[str, Any] = {kind: value.replace(tzinfo=None, fold=0).isoformat()}
    if value.fold:  # the second of a repeated wall-clock hour: the ISO text does not say which
        sent["fold"] = 1
    if value.tzinfo is None:
        return sent
    zone = _zone_out(value.tzinfo)
    return None if zone is None else {**sent, **zone}


def _zone_out(zone: datetime.tzinfo) -> dict[str, Any] | None:
    zoneinfo = sys.modules.get("zoneinfo")  # not imported: no ZoneInfo exists (and the worker imports nothing new)
    if zoneinfo is not None and type(zone) is zoneinfo.ZoneInfo:  # its key is all that makes it (none: from a file)
        key = getattr(zone, "key", None)
        return {"zone": key} if is_zone_name(key) else None
    if type(zone) is not datetime.timezone:
        return None
    offset = zone.utcoffset(None)
    sent: dict[str, Any] = {"offset": offset // datetime.timedelta(microseconds=1)}
    name = zone.tzname(None)
    if name != datetime.timezone(offset).tzname(None):  # a name it was given: equal zones, shown apart
        if len(name) > MAX_TZNAME_CHARS:
            return None
        sent["tzname"] = name
    return sent


def _clock_reader(kind: str, pattern: re.Pattern[str], parse: Callable[[str], Any]) -> Callable[[dict[str, Any], str],
                                                                                                  Any]:
    """How a datetime's or a time's label is read (see clock_out)."""
    def read(sent: dict[str, Any], where: str) -> Any:
        text, fold = sent[kind], sent.get("fold", 0)
        if set(sent) - {kind, "fold", "zone", "offset", "tzname"} or "tzname" in sent and "offset" not in sent or \
                not (isinstance(text, str) and pattern.fullmatch(text)) or "fold" in sent and \
                not (type(fold) is int and fold == 1):
            raise CallError(f"the worker returned a table whose {where} is no {kind}: {str(sent)[:120]}")
        try:
            value = parse(text)
        except ValueError:
            raise CallError(f"the worker returned a table whose {where} is the {kind} {text!r}") from None
        return value.replace(fold=fold, tzinfo=_zone_in(sent, where, kind))
    return read


def _zone_in(sent: dict[str, Any], where: str, kind: str) -> datetime.tzinfo | None:
    import zoneinfo

    if "zone" in sent:
        key = sent["zone"]
        if "offset" in sent or not is_zone_name(key):
            raise CallError(f"the worker returned a table whose {where} is a {kind} of the zone {str(key)[:80]!r}")
        try:
            return zoneinfo.ZoneInfo(key)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise CallError(f"the worker returned a table whose {where} is a {kind} of the unknown zone "
                            f"{key!r}") from None
    if "offset" not in sent:
        return None
    offset, name = sent["offset"], sent.get("tzname")
    if type(offset) is not int or not -_DAY_US < offset < _DAY_US or "tzname" in sent and \
            not (isinstance(name, str) and len(name) <= MAX_TZNAME_CHARS):
        raise CallError(f"the worker returned a table whose {where} is a {kind} of the offset {str(offset)[:40]} "
                        f"named {str(name)[:80]!r}")
    delta = datetime.timedelta(microseconds=offset)
    return datetime.timezone(delta) if name is None else datetime.timezone(delta, name)


def _date_in(sent: dict[str, Any], where: str) -> datetime.date:
    text = sent["date"]
    if set(sent) != {"date"} or not (isinstance(text, str) and _ISO_DATE.fullmatch(text)):
        raise CallError(f"the worker returned a table whose {where} is no date: {str(sent)[:120]}")
    try:  # the pattern lets a 13th month through
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise CallError(f"the worker returned a table whose {where} is the date {text!r}") from None


#: The key naming the kind of a date's, datetime's or time's label -> how it is read.
READERS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "date": _date_in,
    "datetime": _clock_reader("datetime", _ISO_DATETIME, datetime.datetime.fromisoformat),
    "time": _clock_reader("time", _ISO_CLOCK, datetime.time.fromisoformat)}
