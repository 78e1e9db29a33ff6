"""Delivery adapters: email (smtp, console, file), SMS (twilio, console, file), Slack.

Each backend is one module behind the small protocols in ``protocol.py``; ``bootstrap``
chooses them from ``Settings``.
"""
