"""The items a served artifact can recommend, with the attributes filters, promotions and pages need.

A request names items, categories and brands as strings, but every decision about them is a boolean
mask over item indices. Categories and brands are therefore coded once at load (one small integer per
item), so "items of these categories" is a vectorised comparison per request rather than a string
comparison per item. Names a request gives that the catalog does not have simply match nothing: a
filter or promotion for a brand the shop stopped selling is not an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from engine.data.id_map import IdMap


def _coded(values: NDArray[np.str_]) -> tuple[dict[str, int], NDArray[np.int64]]:
    names, codes = np.unique(values, return_inverse=True)
    return {str(n): i for i, n in enumerate(names.tolist())}, codes.astype(np.int64).ravel()


class ItemCatalog:
    """Item attributes in index order; ``brands`` holds "" for items without a brand."""

    def __init__(
        self,
        ids: IdMap,
        *,
        titles: NDArray[np.str_],
        categories: NDArray[np.str_],
        brands: NDArray[np.str_],
        prices: NDArray[np.floating],
        in_stock: NDArray[np.bool_],
    ) -> None:
        n = len(ids)
        columns = {
            "titles": titles,
            "categories": categories,
            "brands": brands,
            "prices": prices,
            "in_stock": in_stock,
        }
        for name, column in columns.items():
            if np.shape(column) != (n,):
                raise ValueError(
                    f"ItemCatalog.{name} has shape {np.shape(column)}, expected ({n},) like the item ids"
                )
        self.ids = ids
        self.titles = np.asarray(titles, dtype=np.str_)
        self.categories = np.asarray(categories, dtype=np.str_)
        self.brands = np.asarray(brands, dtype=np.str_)
        self.prices = np.asarray(prices, dtype=np.float64)
        self.in_stock = np.asarray(in_stock, dtype=bool)
        self._category_index, self.category_codes = _coded(self.categories)
        self._brand_index, self._brand_codes = _coded(self.brands)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def listing_columns(self) -> tuple[list[str], list[str], list[str], list[str], list[float]]:
        """Ids, titles, categories, brands and prices as Python lists, built once per catalog (and so
        shared by every model served over it): a product list reads a few dozen entries per request,
        and a look-up in a list is a fraction of what gathering from five numpy columns costs."""
        return (
            [str(i) for i in self.ids.ids.tolist()],
            self.titles.tolist(),
            self.categories.tolist(),
            self.brands.tolist(),
            self.prices.tolist(),
        )

    @cached_property
    def in_stock_mask(self) -> NDArray[np.bool_]:
        """``in_stock`` as a read-only mask of the catalog's own: the item mask of every request that
        filters on nothing but stock (nearly all), shared instead of copied per request."""
        return _read_only(self.in_stock.copy())

    @cached_property
    def every_item_mask(self) -> NDArray[np.bool_]:
        """A read-only mask of every item: ``in_stock_mask`` for requests that include out-of-stock items."""
        return _read_only(np.ones(len(self), dtype=bool))

    def indices(self, item_ids: Iterable[str]) -> NDArray[np.int64]:
        """Indices of the known ids among ``item_ids``, in order; unknown ids are dropped."""
        return self.ids.known_indices(item_ids)

    def mask_of(self, item_ids: Iterable[str]) -> NDArray[np.bool_]:
        mask = np.zeros(len(self), dtype=bool)
        mask[self.indices(item_ids)] = True
        return mask

    @cached_property
    def category_names(self) -> frozenset[str]:
        """Every category an item of the catalog has."""
        return frozenset(self._category_index)

    def category_mask(self, names: Iterable[str]) -> NDArray[np.bool_]:
        return _attribute_mask(self.category_codes, self._category_index, names)

    def brand_mask(self, names: Iterable[str]) -> NDArray[np.bool_]:
        """Items of these brands; "" is not a brand, so it never matches the items without one."""
        return _attribute_mask(self._brand_codes, self._brand_index, (n for n in names if n != ""))

    def brand_or_none(self, index: int) -> str | None:
        brand = str(self.brands[index])
        return brand or None


def _attribute_mask(
    codes: NDArray[np.int64], index: dict[str, int], names: Iterable[str]
) -> NDArray[np.bool_]:
    wanted = np.asarray(sorted({index[n] for n in names if n in index}), dtype=np.int64)
    return np.isin(codes, wanted)


def _read_only(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    mask.flags.writeable = False
    return mask
