"""Use cases: plain functions that take their collaborators as arguments."""

from collections.abc import Callable

#: Long work reports how many more items it finished; the CLI draws the bar.
Progress = Callable[[int], None]
