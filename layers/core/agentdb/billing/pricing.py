"""The cost model: consumption → whole cents, budgets per tier, and the over-budget rule.

    compute cost  = CU-hours  * NEON_COMPUTE_PRICE_PER_CU_HOUR   (default $0.16)
    storage cost  = GB-months * NEON_STORAGE_PRICE_PER_GB_MONTH  (default $0.35)

GB-months are already pro-rated over the period: a database holding 10 GB for 3 days of a 30-day
month is 10 * 3/30 = 1 GB-month (``storage_gb_months``; providers report it that way, see
``agentdb.providers.base.Consumption``).

Rounding: arithmetic is exact (``Decimal``; a float such as 0.16 is read as the decimal it prints as),
the two parts of one database are added exactly, and the sum is rounded once to whole cents, half up
(0.5 ¢ → 1 ¢, 0.49 ¢ → 0 ¢). A user's total is the sum of the rounded per-database costs, so the
breakdown the usage API shows always adds up to the total the budget is checked against.

Over budget: ``total_cents >= limit_cents``. Reaching the limit pauses (a budget of 0 allows nothing).
The limit is the user's ``custom_budget_cents`` when set, else the tier's (``Settings.budget_cents_for``).
The SQL in ``store/billing.py`` (``users_needing_enforcement``) applies the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentdb.config import Settings

Number = int | float | Decimal
_CENT = Decimal(1)
_HUNDRED = Decimal(100)


def to_decimal(value: Number) -> Decimal:
    """A float read as the decimal it prints as (0.16 → Decimal('0.16')), never its binary expansion."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):  # bool is an int; it is never a quantity
        raise TypeError("a quantity cannot be a bool")
    if isinstance(value, int):
        return Decimal(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("a quantity must be a finite number")
    return Decimal(repr(value))


def round_cents(cents: Decimal) -> int:
    """Whole cents, half up (away from zero for the non-negative amounts used here)."""
    return int(cents.quantize(_CENT, rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Cost:
    """The cost of one database over a period: its exact parts (dollars) and the billed whole cents."""

    compute_dollars: Decimal
    storage_dollars: Decimal

    @property
    def dollars(self) -> Decimal:
        return self.compute_dollars + self.storage_dollars

    @property
    def cents(self) -> int:
        return round_cents(self.dollars * _HUNDRED)


@dataclass(frozen=True)
class Pricing:
    compute_per_cu_hour: Decimal  # dollars
    storage_per_gb_month: Decimal  # dollars

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        return cls(
            compute_per_cu_hour=to_decimal(settings.neon_compute_price_per_cu_hour),
            storage_per_gb_month=to_decimal(settings.neon_storage_price_per_gb_month),
        )

    def cost(self, compute_cu_hours: Number, storage_gb_months: Number) -> Cost:
        """Negative figures (never expected) count as zero."""
        cu = max(to_decimal(compute_cu_hours), Decimal(0))
        gbm = max(to_decimal(storage_gb_months), Decimal(0))
        return Cost(cu * self.compute_per_cu_hour, gbm * self.storage_per_gb_month)

    def cost_cents(self, compute_cu_hours: Number, storage_gb_months: Number) -> int:
        return self.cost(compute_cu_hours, storage_gb_months).cents


def limit_cents(settings: Settings, plan: str | None, custom_budget_cents: int | None) -> int:
    """The user's budget: the custom override when set, else the tier's."""
    if custom_budget_cents is not None:
        return int(custom_budget_cents)
    return settings.budget_cents_for(plan or settings.default_plan)


def tier_limits(settings: Settings) -> dict[str, int]:
    return {plan: settings.budget_cents_for(plan) for plan in ("free", "pro", "team", "enterprise")}


def is_over_budget(total_cents: int, limit: int) -> bool:
    """Reaching the limit counts as over it."""
    return total_cents >= limit


def month_start(at: datetime) -> datetime:
    """00:00 UTC on the first day of ``at``'s month: where the monthly billing period begins."""
    at = at.astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def day_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def dollars(cents: int) -> str:
    """For messages: 1234 → '$12.34'."""
    return f"${Decimal(cents) / _HUNDRED:.2f}"
