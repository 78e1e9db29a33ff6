"""Use cases: plain functions that take their collaborators as arguments."""

from collections.abc import Callable

#: Long work reports how many more items it finished; the CLI draws the bar.
Progress = Callable[[int], None]
#: A paged listing reports how many items it has read and the share of its window (0 to 1)
#: they cover, when the total is not known until the last page.
Listing = Callable[[int, float], None]
