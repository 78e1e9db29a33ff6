"""Dunning use cases: the cron run (``run``), messages (``messages``), operator commands
(``operator``)."""
