"""The fixed set of named transforms (see ``service.mapping`` for what each one does).

Each transform is a pair of functions: ``pull`` turns a provider value into platform form,
``push`` turns a platform value into provider form. Bad values raise ValidationError with
one line naming the platform field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import phonenumbers
import pycountry

from service.errors import ValidationError
from service.mapping.paths import MISSING, Path, Segment, read, show

TRANSFORMS: tuple[str, ...] = (
    "lower", "upper", "strip", "e164", "iso_country", "minor_units", "major_units",
    "split_name", "join_name", "bool", "date", "datetime",
)


@dataclass(frozen=True, slots=True)
class Context:
    """Where a value sits: its entry's paths, the platform record, the list element."""

    platform_path: Path
    provider_path: Path
    platform_record: dict[str, Any]
    index: int | None = None

    def at(self, index: int | None) -> Context:
        return self if index is None else replace(self, index=index)

    @property
    def field(self) -> str:
        return show(self.platform_path, self.index)

    def fail(self, problem: str) -> ValidationError:
        return ValidationError(f"{self.field}: {problem}")

    def sibling(self, name: str) -> Any:
        """The value of the sibling field ``name`` of this one in the platform record."""
        path = (*self.platform_path[:-1], Segment(name))
        value = read(self.platform_record, path)
        if isinstance(value, list) and self.index is not None:
            return value[self.index] if self.index < len(value) else MISSING
        return value


Function = Callable[[Any, Context], Any]


def _text(value: Any, context: Context) -> str:
    if not isinstance(value, str):
        raise context.fail(f"expected text, got {type(value).__name__}")
    return value


def _lower(value: Any, context: Context) -> str:
    return _text(value, context).lower()


def _upper(value: Any, context: Context) -> str:
    return _text(value, context).upper()


def _strip(value: Any, context: Context) -> str:
    return _text(value, context).strip()


# ---------------------------------------------------------------- phones and countries


def _e164(value: Any, context: Context) -> str:
    text = _text(value, context).strip()
    region = None
    if not text.startswith("+"):
        country = read(context.platform_record, (Segment("address"), Segment("country")))
        region = _country_code(country) if isinstance(country, str) else None
    formatted = _format_e164(text, region)
    if formatted.startswith("+"):
        return formatted
    raise context.fail(f'{formatted} "{text}"')


@functools.lru_cache(maxsize=4096)
def _format_e164(text: str, region: str | None) -> str:
    """The E.164 form of a number, or what is wrong with it (text without a leading +)."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return "not a phone number"
    if not phonenumbers.is_possible_number(number):
        return "not a possible phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_COUNTRY_ALIASES = {"UK": "GB", "U.K.": "GB", "U.S.": "US", "U.S.A.": "US", "ENGLAND": "GB",
                    "SCOTLAND": "GB", "WALES": "GB", "NORTHERN IRELAND": "GB"}


@functools.lru_cache(maxsize=4096)
def _country_code(text: str) -> str | None:
    key = text.strip().upper()
    key = _COUNTRY_ALIASES.get(key, key)
    found: Any = None
    if len(key) == 2:
        found = pycountry.countries.get(alpha_2=key)
    elif len(key) == 3:
        found = pycountry.countries.get(alpha_3=key)
    if found is None:
        try:
            found = pycountry.countries.lookup(key)
        except LookupError:
            return None
    return str(found.alpha_2)


def _iso_country(value: Any, context: Context) -> str:
    code = _country_code(_text(value, context))
    if code is None:
        raise context.fail(f'unknown country "{value}"')
    return code


# ---------------------------------------------------------------- money

# ISO 4217 minor-unit exponents that are not 2 (pycountry does not carry them).
_EXPONENTS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


@functools.lru_cache(maxsize=512)
def _known_currency(code: str) -> bool:
    return pycountry.currencies.get(alpha_3=code) is not None


def currency_exponent(currency: str) -> int:
    """The ISO 4217 exponent of ``currency`` (JPY 0, USD 2, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


def _exponent_for(context: Context) -> int:
    currency = context.sibling("currency")
    if currency is MISSING:
        raise context.fail(f"no currency at {show((*context.platform_path[:-1], Segment('currency')))}")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency) \
            or not _known_currency(currency.upper()):
        raise context.fail(f'unknown currency "{currency}"')
    return currency_exponent(currency)


def _decimal(value: Any, context: Context) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise context.fail(f"expected a number, got {type(value).__name__}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise context.fail(f'not a number "{value}"') from None
    if not number.is_finite():
        raise context.fail(f'not a number "{value}"')
    return number


_MAX_MINOR = 10**18  # beyond any real amount; keeps quantize within Decimal's precision


def _to_minor(value: Any, context: Context) -> int:
    exponent = _exponent_for(context)
    scaled = _decimal(value, context).scaleb(exponent)
    if abs(scaled) >= _MAX_MINOR:
        raise context.fail(f"amount out of range {value!r}")
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _to_major(value: Any, context: Context) -> int | float:
    exponent = _exponent_for(context)
    if isinstance(value, bool) or not isinstance(value, int):
        raise context.fail(f"expected whole minor units, got {value!r}")
    if abs(value) >= _MAX_MINOR:
        raise context.fail(f"amount out of range {value!r}")
    major = Decimal(value).scaleb(-exponent)
    return int(major) if exponent == 0 else float(major)


# ---------------------------------------------------------------- booleans

_TRUE = frozenset({"true", "1", "yes", "y", "on", "subscribed"})
_FALSE = frozenset({"false", "0", "no", "n", "off", "unsubscribed", "cleaned"})
_UNKNOWN = frozenset({"pending", "transactional", "archived"})


def _bool_pull(value: Any, context: Context) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    if word in _UNKNOWN:
        return MISSING
    raise context.fail(f"not a yes/no value {value!r}")


def _bool_push(value: Any, context: Context) -> Any:
    flag = _bool_pull(value, context)
    if flag is MISSING:
        return MISSING
    if context.provider_path[-1].name == "status":  # Mailchimp's consent lives in status
        return "subscribed" if flag else "unsubscribed"
    return flag


# ---------------------------------------------------------------- dates and times


def _parse_datetime(value: Any, context: Context) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise context.fail(f"not a Unix time {value!r}") from None
    text = _text(value, context).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise context.fail(f'not a date-time "{text}"') from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _datetime(value: Any, context: Context) -> str:
    moment = _parse_datetime(value, context).astimezone(UTC)
    return moment.isoformat().removesuffix("+00:00") + "Z"


def _date(value: Any, context: Context) -> str:
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise context.fail(f'not a date "{value}"') from None
    moment = _parse_datetime(value, context)
    if not isinstance(value, str):
        moment = moment.astimezone(UTC)
    return moment.date().isoformat()


# ---------------------------------------------------------------- names

_GIVEN = frozenset({"first", "firstname", "given", "givenname", "fname", "forename"})
_FAMILY = frozenset({"last", "lastname", "family", "familyname", "lname", "surname"})


def name_role(path: Path) -> str | None:
    """``given``, ``family`` or None, from the last segment of a path."""
    key = re.sub(r"[^a-z]", "", path[-1].name.lower()) if path else ""
    return "given" if key in _GIVEN else "family" if key in _FAMILY else None


def join_name(given: Any, family: Any, field: str) -> str | None:
    """``"First Last"``, or ``"Last, First"`` when that would not split back the same."""
    for part in (given, family):
        if part is not MISSING and not isinstance(part, str):
            raise ValidationError(f"{field}: expected text, got {type(part).__name__}")
    first = "" if given is MISSING else given
    last = "" if family is MISSING else family
    if not first and not last:
        return None
    if first and "," not in first and "," not in last and not any(c.isspace() for c in first):
        return f"{first} {last}" if last else first
    return f"{last}, {first}" if first else f"{last},"


def split_name(full: Any, field: str) -> tuple[str | None, str | None]:
    """(first, last) of a full name; the inverse of ``join_name``."""
    if not isinstance(full, str):
        raise ValidationError(f"{field}: expected text, got {type(full).__name__}")
    text = full.strip()
    if "," in text:
        last, _, first = text.rpartition(",")
    else:
        first, _, last = _split_whitespace(text)
    return (first.strip() or None, last.strip() or None)


def _split_whitespace(text: str) -> tuple[str, str, str]:
    parts = text.split(None, 1)
    return (parts[0] if parts else "", " ", parts[1] if len(parts) > 1 else "")


def _refuse(value: Any, context: Context) -> Any:
    raise context.fail("split_name and join_name apply to a pair of fields")  # never a single value


_PULL: dict[str, Function] = {
    "lower": _lower, "upper": _upper, "strip": _strip, "e164": _e164, "iso_country": _iso_country,
    "minor_units": _to_minor, "major_units": _to_major, "bool": _bool_pull, "date": _date,
    "datetime": _datetime, "split_name": _refuse, "join_name": _refuse,
}
_PUSH: dict[str, Function] = {
    **_PULL, "minor_units": _to_major, "major_units": _to_minor, "bool": _bool_push,
}


def pull_function(name: str) -> Function:
    return _PULL[name]


def push_function(name: str) -> Function:
    return _PUSH[name]
