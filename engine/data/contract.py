"""The data contract: the tables persona-engine reads, their columns and what each column means.

Everything that enters the engine passes through these schemas, whether it comes from the synthetic
shop, a shop's own export or an adapter. Keeping them in one place means the loader, the generator,
the README and the error messages can never disagree about what a column is called or what it holds.

Conventions shared by every table:
- ids are strings (integer ids in a file are read as their decimal text), matched exactly: an id
  column (``Column.identifier``) refuses a cell with a control character or leading or trailing
  whitespace (engine/data/id_cells.py);
- timestamps are ISO 8601; a timestamp without an offset is taken as UTC;
- list columns are Parquet ``list<string>``, or in CSV one cell with the values joined by ``|``;
- booleans in CSV are ``true``/``false`` (also ``1``/``0``, ``yes``/``no``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class ColumnKind(StrEnum):
    """How a column's cells are parsed and what type they have once loaded."""

    STRING = "string"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TIMESTAMP = "timestamp"  # loaded as polars Datetime("us", "UTC")
    DATE = "date"
    STRING_LIST = "string_list"  # loaded as polars List(Utf8)


MAX_AMOUNT = 1e15
"""The largest price, money amount, quantity or outcome a table may hold (``Column.max_value``).

Amounts are summed downstream: a basket's list prices when a request names the cart, revenue, outcomes
weighted by inverse propensities in ``evaluate-policy``. Near float64's largest value (1.8e308) those sums
became infinite: a cart of two items priced 1e308 failed RankOffers with INTERNAL ("basket_value must be a
finite number >= 0, got inf"), and a decision outcome of 1e308 made ``evaluate-policy`` print Infinity
(--json) or stop with a traceback. 10^15 is far above any price, order or quantity in any currency, is
still exact to the unit in float64 (2^53 is about 9.0e15), and a billion such amounts sum to 1e24, nowhere
near overflow."""

PURCHASE: Final = "purchase"  # the event type that puts an item on a customer's bought list
EVENT_TYPES: tuple[str, ...] = ("view", "cart", PURCHASE)
OFFER_KINDS: tuple[str, ...] = ("percent_off", "bundle", "free_shipping", "loyalty_points", "early_access")
DECISION_TYPES: tuple[str, ...] = ("offer", "layout")


@dataclass(frozen=True)
class Column:
    """One column of a table in the contract."""

    name: str
    kind: ColumnKind
    description: str
    required: bool = True  # the column must be present in the file
    nullable: bool = False  # cells may be empty
    allowed: tuple[str, ...] | None = None  # closed vocabulary for STRING columns
    min_value: float | None = None  # inclusive lower bound for numeric columns
    max_value: float | None = None  # inclusive upper bound for numeric columns
    unique: bool = False  # values must not repeat (primary key)
    identifier: bool = False  # an id matched against other tables and serving requests (id_cells.py)


@dataclass(frozen=True)
class TableSchema:
    """A table of the contract: its name (also the default file stem) and its columns."""

    name: str
    description: str
    columns: tuple[Column, ...]
    extra_prefix: str | None = None  # columns named <prefix><name> are kept as extra features

    @property
    def key(self) -> Column | None:
        """The primary-key column, if the table has one."""
        return next((c for c in self.columns if c.unique), None)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


EVENTS = TableSchema(
    name="events",
    description="Behavioral events: one row per view, add-to-cart or purchase of one item by one customer.",
    columns=(
        Column(
            "event_id",
            ColumnKind.STRING,
            "Unique id of the event; makes ingestion idempotent.",
            unique=True,
            identifier=True,
        ),
        Column("customer_id", ColumnKind.STRING, "The customer who acted.", identifier=True),
        Column("item_id", ColumnKind.STRING, "The item acted on; must exist in `items`.", identifier=True),
        Column("event_type", ColumnKind.STRING, "What happened.", allowed=EVENT_TYPES),
        Column(
            "timestamp", ColumnKind.TIMESTAMP, "When it happened (ISO 8601, UTC when no offset is given)."
        ),
        Column(
            "price_paid",
            ColumnKind.FLOAT,
            "Unit price the customer saw or paid, after discount.",
            required=False,
            nullable=True,
            min_value=0.0,
            max_value=MAX_AMOUNT,
        ),
        Column(
            "quantity",
            ColumnKind.FLOAT,
            "Units bought on the line (purchases from transaction exports); empty when not recorded.",
            required=False,
            nullable=True,
            min_value=0.0,
            max_value=MAX_AMOUNT,
        ),
        Column(
            "discount",
            ColumnKind.FLOAT,
            "Fraction taken off the list price, 0 for none (0.2 = 20% off).",
            required=False,
            nullable=True,
            min_value=0.0,
            max_value=1.0,
        ),
        Column(
            "channel",
            ColumnKind.STRING,
            "Traffic source: direct, search, email, social, app_push, ...",
            required=False,
            nullable=True,
        ),
        Column(
            "device", ColumnKind.STRING, "desktop, mobile, tablet, app, ...", required=False, nullable=True
        ),
    ),
)

ITEMS = TableSchema(
    name="items",
    description="The catalog: every item that events, offers or recommendations may name.",
    columns=(
        Column("item_id", ColumnKind.STRING, "Unique id of the item.", unique=True, identifier=True),
        Column("title", ColumnKind.STRING, "Human-readable name.", required=False, nullable=True),
        Column("category", ColumnKind.STRING, "Category the item is shelved in."),
        Column("brand", ColumnKind.STRING, "Brand name.", required=False, nullable=True),
        Column("price", ColumnKind.FLOAT, "Current list price.", min_value=0.0, max_value=MAX_AMOUNT),
        Column(
            "tags",
            ColumnKind.STRING_LIST,
            "Attribute tags (organic, sustainable, new-tech, premium, ...).",
            required=False,
            nullable=True,
        ),
        Column(
            "in_stock", ColumnKind.BOOL, "Whether the item can be sold now.", required=False, nullable=True
        ),
    ),
)

CUSTOMER_FEATURE_PREFIX = "feature__"
"""Extra demographic columns of the customers table: ``feature__household_size``, ``feature__children``.

A shop's customers carry more than the fixed demographics (household size, children, home ownership,
...). Any column named ``feature__<name>`` is kept and used for cold start like the demographics: a
numeric column (Parquet numbers, or CSV text where every cell is a number) is standardized, any other
is one-hot per value. The prefix keeps an export's unrelated extra columns out, as before."""

CUSTOMERS = TableSchema(
    name="customers",
    description="Customer attributes known at signup; optional; used for cold start and demographics.",
    extra_prefix=CUSTOMER_FEATURE_PREFIX,
    columns=(
        Column("customer_id", ColumnKind.STRING, "Unique id of the customer.", unique=True, identifier=True),
        Column("age_band", ColumnKind.STRING, "Age band, e.g. 18-24, 25-34.", required=False, nullable=True),
        Column("region", ColumnKind.STRING, "Region or country.", required=False, nullable=True),
        Column("income_band", ColumnKind.STRING, "low, middle, high, ...", required=False, nullable=True),
        Column("gender", ColumnKind.STRING, "Gender as the shop records it.", required=False, nullable=True),
        Column("occupation", ColumnKind.STRING, "Occupation or profession.", required=False, nullable=True),
        Column(
            "signup_date", ColumnKind.DATE, "Date the account was created.", required=False, nullable=True
        ),
    ),
)

OFFERS = TableSchema(
    name="offers",
    description="Offers the shop can make, with the rules that say who may receive them.",
    columns=(
        Column("offer_id", ColumnKind.STRING, "Unique id of the offer.", unique=True, identifier=True),
        Column("kind", ColumnKind.STRING, "What the offer gives.", allowed=OFFER_KINDS),
        Column("description", ColumnKind.STRING, "Text shown to people.", required=False, nullable=True),
        Column(
            "eligible_categories",
            ColumnKind.STRING_LIST,
            "Categories the offer applies to; empty means every category.",
            required=False,
            nullable=True,
        ),
        Column(
            "eligible_brands",
            ColumnKind.STRING_LIST,
            "Brands the offer applies to; empty means every brand.",
            required=False,
            nullable=True,
        ),
        Column(
            "min_basket",
            ColumnKind.FLOAT,
            "Smallest basket value that qualifies, 0 for none.",
            required=False,
            nullable=True,
            min_value=0.0,
            max_value=MAX_AMOUNT,
        ),
        Column(
            "cost",
            ColumnKind.FLOAT,
            "Expected cost to the shop per redemption.",
            min_value=0.0,
            max_value=MAX_AMOUNT,
        ),
    ),
)

LAYOUTS = TableSchema(
    name="layouts",
    description="Website layout variants: an ordered list of slots the page fills.",
    columns=(
        Column("variant_id", ColumnKind.STRING, "Unique id of the variant.", unique=True, identifier=True),
        Column(
            "description", ColumnKind.STRING, "What the variant emphasises.", required=False, nullable=True
        ),
        Column("slots", ColumnKind.STRING_LIST, "Slot names in page order (hero_deals, recommended, ...)."),
    ),
)

DECISIONS = TableSchema(
    name="decisions",
    description="Logged offer and layout decisions with the propensity of the chosen arm and the outcome.",
    columns=(
        Column("decision_id", ColumnKind.STRING, "Unique id of the decision.", unique=True, identifier=True),
        Column("customer_id", ColumnKind.STRING, "Who the decision was made for.", identifier=True),
        Column("timestamp", ColumnKind.TIMESTAMP, "When it was made."),
        Column("context", ColumnKind.STRING, "Shopping context, e.g. weekday or weekend_holiday."),
        Column("decision_type", ColumnKind.STRING, "offer or layout.", allowed=DECISION_TYPES),
        Column("arm_id", ColumnKind.STRING, "The chosen offer_id or variant_id.", identifier=True),
        Column(
            "position",
            ColumnKind.STRING,
            "Slot or position the arm was shown in (1, 2, hero, ...); when given, the arm that was chosen "
            "(and whose propensity is logged) is arm_id in this position.",
            required=False,
            nullable=True,
        ),
        Column(
            "propensity",
            ColumnKind.FLOAT,
            "Probability with which the logging policy chose this arm (in this position, when given).",
            min_value=0.0,
            max_value=1.0,
        ),
        Column(
            "outcome",
            ColumnKind.FLOAT,
            "Reward observed: 1 converted/redeemed, 0 not.",
            min_value=0.0,
            max_value=MAX_AMOUNT,
        ),
    ),
)

TABLES: dict[str, TableSchema] = {t.name: t for t in (EVENTS, ITEMS, CUSTOMERS, OFFERS, LAYOUTS, DECISIONS)}
REQUIRED_TABLES: tuple[str, ...] = ("events", "items")
LIST_SEPARATOR = "|"
