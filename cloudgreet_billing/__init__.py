"""CloudGreet's billing and finance playbook, made executable."""

__version__ = "0.1.0"
