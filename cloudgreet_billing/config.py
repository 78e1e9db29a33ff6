"""Settings: read once from the environment (and ``.env``), validated, frozen.

Nothing here connects to anything; ``bootstrap`` builds the adapters from these values.
Malformed values fail at load with one line naming the variable and the fix. Values that
are merely absent fail later, only when a command needs them (``Settings.require``).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from cloudgreet_billing.errors import ConfigError

StoreKind = Literal["sqlite", "postgres", "supabase"]

EMAIL_BACKENDS = ("smtp", "console", "file")
SMS_BACKENDS = ("twilio", "console", "file")
SECRET_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")
#: Supabase's new API keys are opaque strings with these prefixes, not JWTs
#: (https://supabase.com/docs/guides/api/api-keys).
SUPABASE_SECRET_PREFIX = "sb_secret_"  # noqa: S105 - a prefix, not a key
SUPABASE_PUBLISHABLE_PREFIX = "sb_publishable_"
SupabaseKeyKind = Literal["secret", "service_role"]
#: Seconds a command may wait on Stripe in all (``STRIPE_TIMEOUT_SECONDS``): someone is
#: watching ``retry``, ``resend-link``, ``portal`` and ``doctor``, and 20 s is long enough
#: for Stripe's slowest ordinary answers (a charge that waits on the card network).
DEFAULT_STRIPE_TIMEOUT = 20.0
#: The same for the paging commands, ``sync`` and ``reconcile``
#: (``STRIPE_BATCH_TIMEOUT_SECONDS``): 300 s reads hundreds of pages of 100 at Stripe's
#: usual latency, far more than ten minutes of events, and still ends before the next
#: ``*/10`` cron run starts, so stuck runs do not pile up.
DEFAULT_STRIPE_BATCH_TIMEOUT = 300.0
#: Who an incident summary tags in Slack unless ``SLACK_BILLING_OPS_HANDLE`` says.
DEFAULT_BILLING_OPS_HANDLE = "@billing_ops"
#: ``retry`` waits for Stripe's own next attempt when it is this close
#: (``BILLING_RETRY_RACE_WINDOW``, ``domain.retry_rules``): within six hours is "soon", since
#: Stripe's default Smart Retries schedule makes 8 tries in 2 weeks, one every ~42 hours.
DEFAULT_RETRY_RACE_WINDOW = timedelta(hours=6)


def redact(secret: str | None) -> str:
    """``sk_live_…a1b2``: enough to tell keys apart, never enough to use one."""
    if not secret:
        return ""
    prefix = ""
    known_prefixes = (
        *SECRET_KEY_PREFIXES, "whsec_", "sk_", "rk_",
        SUPABASE_SECRET_PREFIX, SUPABASE_PUBLISHABLE_PREFIX,
    )  # fmt: skip
    for known in known_prefixes:
        if secret.startswith(known):
            prefix = known
            break
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"{prefix}…{tail}"


_PASSWORD_PARAMS = ("password", "sslpassword")


def redact_url(url: str) -> str:
    """The URL with any password replaced, for output and logs: the ``user:pass@`` part
    and libpq's ``?password=`` query parameter alike."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    if parts.query:
        query = [
            f"{key}=***" if key.lower() in _PASSWORD_PARAMS else pair
            for pair in parts.query.split("&")
            for key in [pair.split("=", 1)[0]]
        ]
        parts = parts._replace(query="&".join(query))
    return urlunsplit(parts)


def scrub_secrets(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every configured secret (and URL password) replaced by a redaction:
    the last line of defence for messages that come from drivers and libraries."""
    env = os.environ if env is None else env
    secrets: set[str] = set()
    for variable, attr in _ATTR_BY_VARIABLE.items():
        value = (env.get(variable) or "").strip()
        if attr not in _SECRET_ATTRS or not value:
            continue
        secrets.update(part.strip() for part in value.split(",") if part.strip())
        if attr in _SUPABASE_KEYS and value.count(".") == 2:
            # A JWT's signature is its secret part; a message may quote it alone.
            secrets.add(value.rsplit(".", 1)[1])
        if attr in _URL_SECRETS:
            parts = urlsplit(value)
            found_in_url = [parts.password] if parts.password else []
            for pair in parts.query.split("&"):
                key, _, found = pair.partition("=")
                if key.lower() in _PASSWORD_PARAMS and found:
                    found_in_url.append(found)
            # As written in the URL and as a driver or server sees it (decoded): a
            # password like "p@ss" is "p%40ss" in the URL.
            secrets.update(found_in_url)
            secrets.update(unquote(found) for found in found_in_url)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, redact(secret) or "***")
    return text


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def default_sqlite_path() -> Path:
    # platformdirs is imported here, not at module level, to keep start-up lean.
    from platformdirs import user_data_path

    return user_data_path("cloudgreet-billing", appauthor=False) / "billing.db"


@dataclass(frozen=True)
class Settings:
    """Every configuration value the contract names, validated."""

    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    stripe_timeout: float = DEFAULT_STRIPE_TIMEOUT
    stripe_batch_timeout: float = DEFAULT_STRIPE_BATCH_TIMEOUT
    app_url: str | None = None
    database_url: str | None = field(default=None, repr=False)
    supabase_url: str | None = None
    supabase_service_role_key: str | None = field(default=None, repr=False)
    supabase_secret_key: str | None = field(default=None, repr=False)
    email_backend: str = "console"
    smtp_url: str | None = field(default=None, repr=False)
    email_from: str | None = None
    outbox_dir: Path | None = None
    sms_backend: str = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from: str | None = None
    slack_webhook_url: str | None = field(default=None, repr=False)
    billing_ops_handle: str = DEFAULT_BILLING_OPS_HANDLE
    finance_lead_email: str | None = None
    retry_race_window: timedelta = DEFAULT_RETRY_RACE_WINDOW
    actor: str = field(default_factory=default_actor)
    config_path: Path | None = None
    debug: bool = False

    @property
    def store_kind(self) -> StoreKind:
        """Which store the contract's selection rule picks."""
        if self.database_url:
            return "postgres" if self.database_url.startswith("postgres") else "sqlite"
        if self.supabase_url and self.supabase_key:
            return "supabase"
        return "sqlite"

    @property
    def supabase_key(self) -> str | None:
        """The Supabase key the REST store uses: ``SUPABASE_SECRET_KEY`` when set, else
        ``SUPABASE_SERVICE_ROLE_KEY``; either variable may hold either kind of key."""
        return self.supabase_secret_key or self.supabase_service_role_key

    @property
    def supabase_key_variable(self) -> str | None:
        if self.supabase_secret_key:
            return "SUPABASE_SECRET_KEY"
        return "SUPABASE_SERVICE_ROLE_KEY" if self.supabase_service_role_key else None

    @property
    def supabase_key_kind(self) -> SupabaseKeyKind | None:
        """``secret`` (an ``sb_secret_…`` key) or ``service_role`` (the legacy JWT): what
        ``doctor`` may show instead of the key. Load already refused any other kind."""
        key = self.supabase_key
        if key is None:
            return None
        return "secret" if key.startswith(SUPABASE_SECRET_PREFIX) else "service_role"

    @property
    def sqlite_path(self) -> Path:
        if self.database_url and self.database_url.startswith("sqlite:"):
            return sqlite_path_from_url(self.database_url)
        return default_sqlite_path()

    @property
    def stripe_mode(self) -> Literal["test", "live"] | None:
        if not self.stripe_secret_key:
            return None
        return "live" if "_live_" in self.stripe_secret_key else "test"

    def require(self, *names: str) -> None:
        """Fail with one line per the first missing variable a command needs."""
        for name in names:
            attr = _ATTR_BY_VARIABLE[name]
            if not getattr(self, attr):
                raise ConfigError(
                    f"{name} is not set",
                    hint=f"set {name} in the environment or in .env (see .env.example)",
                )

    def describe(self) -> dict[str, str]:
        """The configuration as it may be shown to a person: secrets redacted."""
        shown: dict[str, str] = {}
        for variable, attr in _ATTR_BY_VARIABLE.items():
            value = getattr(self, attr)
            if value in (None, "", ()) or value == _UNSET_DEFAULTS.get(attr):
                continue
            if attr in _SECRET_ATTRS:
                if isinstance(value, tuple):
                    value = ", ".join(redact(v) for v in value)
                elif attr in _URL_SECRETS:
                    value = redact_url(value) if attr != "slack_webhook_url" else "set (hidden)"
                else:
                    value = redact(value)
            if isinstance(value, timedelta):
                value = duration_text(value)
            shown[variable] = f"{value:g}" if isinstance(value, float) else str(value)
        return shown


_ATTR_BY_VARIABLE: dict[str, str] = {
    "STRIPE_SECRET_KEY": "stripe_secret_key",
    "STRIPE_API_BASE": "stripe_api_base",
    "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secrets",
    "STRIPE_TIMEOUT_SECONDS": "stripe_timeout",
    "STRIPE_BATCH_TIMEOUT_SECONDS": "stripe_batch_timeout",
    "APP_URL": "app_url",
    "BILLING_DATABASE_URL": "database_url",
    "SUPABASE_URL": "supabase_url",
    "SUPABASE_SERVICE_ROLE_KEY": "supabase_service_role_key",
    "SUPABASE_SECRET_KEY": "supabase_secret_key",
    "BILLING_EMAIL_BACKEND": "email_backend",
    "SMTP_URL": "smtp_url",
    "EMAIL_FROM": "email_from",
    "BILLING_OUTBOX_DIR": "outbox_dir",
    "BILLING_SMS_BACKEND": "sms_backend",
    "TWILIO_ACCOUNT_SID": "twilio_account_sid",
    "TWILIO_AUTH_TOKEN": "twilio_auth_token",
    "TWILIO_FROM": "twilio_from",
    "SLACK_WEBHOOK_URL": "slack_webhook_url",
    "SLACK_BILLING_OPS_HANDLE": "billing_ops_handle",
    "FINANCE_LEAD_EMAIL": "finance_lead_email",
    "BILLING_RETRY_RACE_WINDOW": "retry_race_window",
    "BILLING_ACTOR": "actor",
    "BILLING_CONFIG": "config_path",
}
#: Values that stand for "not set": describing them would count defaults as settings.
_UNSET_DEFAULTS: dict[str, object] = {
    "billing_ops_handle": DEFAULT_BILLING_OPS_HANDLE,
    "stripe_timeout": DEFAULT_STRIPE_TIMEOUT,
    "stripe_batch_timeout": DEFAULT_STRIPE_BATCH_TIMEOUT,
    "retry_race_window": DEFAULT_RETRY_RACE_WINDOW,
}
_SECRET_ATTRS = {
    "stripe_secret_key",
    "stripe_webhook_secrets",
    "database_url",
    "supabase_service_role_key",
    "supabase_secret_key",
    "smtp_url",
    "twilio_auth_token",
    "slack_webhook_url",
}
_URL_SECRETS = {"database_url", "smtp_url", "slack_webhook_url"}
_SUPABASE_KEYS = {"supabase_service_role_key", "supabase_secret_key"}


def sqlite_path_from_url(url: str) -> Path:
    """``sqlite:///rel/or/abs.db`` (three slashes, then the path as written)."""
    path = url.removeprefix("sqlite://")
    if not path.startswith("/") or path == "/":
        raise ConfigError(
            f"BILLING_DATABASE_URL {url!r} has no file path",
            hint="use sqlite:///path/to/billing.db, e.g. sqlite:////var/lib/billing.db",
        )
    # sqlite:///billing.db means "billing.db" relative to the working directory,
    # sqlite:////abs/path an absolute one, as SQLAlchemy users expect.
    return Path(path[1:])


def _clean(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _check_stripe_key(key: str | None) -> str | None:
    if key is None:
        return None
    if key.startswith(("pk_test_", "pk_live_")):
        raise ConfigError(
            "STRIPE_SECRET_KEY holds a publishable key (pk_…)",
            hint="use the secret key (sk_…) or a restricted key (rk_…) "
            "from the Stripe dashboard's API keys page",
        )
    if not key.startswith(SECRET_KEY_PREFIXES):
        raise ConfigError(
            f"STRIPE_SECRET_KEY {redact(key)!r} is not a Stripe secret key",
            hint="it must start with sk_test_, sk_live_, rk_test_ or rk_live_",
        )
    return key


SUPABASE_KEY_FIX = "use the service_role or secret key from Project Settings → API Keys"


def supabase_key_role(key: str) -> str | None:
    """The Postgres role a Supabase API key runs as, told from its form alone.

    ``sb_secret_…`` → ``service_role`` and ``sb_publishable_…`` → ``anon`` (the new keys are
    not JWTs); a legacy key is a JWT whose payload names its ``role`` (decoded, not
    verified: only Supabase holds the JWT secret). None when it is neither.
    """
    if key.startswith(SUPABASE_SECRET_PREFIX):
        return "service_role"
    if key.startswith(SUPABASE_PUBLISHABLE_PREFIX):
        return "anon"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    role = payload.get("role") if isinstance(payload, dict) else None
    return role if isinstance(role, str) else None


def _check_supabase_key(name: str, key: str | None) -> str | None:
    """Refuse, at load, a key that cannot run the billing store: only ``service_role``
    reaches tables whose grants are revoked from ``anon`` and ``authenticated``."""
    if key is None:
        return None
    role = supabase_key_role(key)
    if role == "service_role":
        return key
    if key.startswith(SUPABASE_PUBLISHABLE_PREFIX):
        problem = "a publishable key (sb_publishable_…), which runs as anon"
    elif role == "anon":
        problem = "the anon key, which runs as anon"
    elif role is not None:
        shown = role if len(role) <= 32 else role[:32] + "…"
        problem = f"a JWT for the role {shown!r}, not the service_role key"
    else:
        raise ConfigError(
            f"{name} {redact(key)!r} is not a Supabase API key",
            hint=f"{SUPABASE_KEY_FIX}: a secret key starts with {SUPABASE_SECRET_PREFIX}, "
            "a legacy service_role key is a JWT (eyJ…)",
        )
    raise ConfigError(f"{name} holds {problem}", hint=SUPABASE_KEY_FIX)


def _check_webhook_secrets(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    secrets = tuple(s.strip() for s in raw.split(",") if s.strip())
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET holds a value that is not a signing secret",
                hint="each comma-separated value must start with whsec_ "
                "(the endpoint's signing secret in the Stripe dashboard)",
            )
    return secrets


def _check_seconds(name: str, raw: str | None, default: float) -> float:
    """A positive number of seconds (``20``, ``2.5``), at most a day."""
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 86_400:  # also false for nan
        raise ConfigError(
            f"{name} must be a number of seconds above 0, not {raw!r}",
            hint=f"e.g. {name}={default:g}, or unset it for the default ({default:g} s)",
        )
    return seconds


_DURATION = re.compile(r"(\d{1,4})\s*(h|m|min)?")


def duration_text(window: timedelta) -> str:
    """A window as ``BILLING_RETRY_RACE_WINDOW`` writes it: ``6h``, ``90m``, ``0``."""
    minutes = int(window.total_seconds() // 60)
    if minutes == 0:
        return "0"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _check_race_window(raw: str | None) -> timedelta:
    """Hours (``6h``) or minutes (``90m``), at most a week; ``0`` turns the check off."""
    if raw is None:
        return DEFAULT_RETRY_RACE_WINDOW
    match = _DURATION.fullmatch(raw.strip().lower())
    amount = int(match.group(1)) if match else -1
    unit = match.group(2) if match else None
    if match and amount == 0:
        return timedelta(0)
    window = timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount)
    if not match or unit is None or window > timedelta(days=7):
        raise ConfigError(
            f"BILLING_RETRY_RACE_WINDOW must be hours or minutes such as 6h or 90m, not {raw!r}",
            hint="e.g. BILLING_RETRY_RACE_WINDOW=6h (at most 168h), 0 to turn the check off, "
            "or unset it for the default (6h)",
        )
    return window


def _check_database_url(url: str | None) -> str | None:
    if url is None:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        sqlite_path_from_url(url)
        return url
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.hostname and "host=" not in url:
            raise ConfigError(
                "BILLING_DATABASE_URL has no host",
                hint="use postgresql://user:password@host:5432/dbname",
            )
        try:
            parts.port  # noqa: B018 - a bad port raises only when read
        except ValueError:
            # Never quote the URL: its password sits next to the port.
            raise ConfigError(
                "BILLING_DATABASE_URL has a port that is not a number from 1 to 65535",
                hint="use e.g. postgresql://user:password@host:5432/dbname",
            ) from None
        if parts.port == 0:
            raise ConfigError(
                "BILLING_DATABASE_URL has port 0", hint="PostgreSQL listens on 5432 by default"
            )
        return url
    raise ConfigError(
        f"BILLING_DATABASE_URL has an unknown scheme {scheme + '://' if scheme else '(none)'}",
        hint="use sqlite:///path/to/billing.db or postgresql://user:password@host:5432/dbname",
    )


#: A mention Slack turns into a notification: a user group (``<!subteam^S…>``), a user
#: (``<@U…>``), or ``<!here>``; a plain ``@billing_ops`` is only text in a webhook post
#: (https://api.slack.com/reference/surfaces/formatting#mentioning-groups).
_SLACK_HANDLE = re.compile(
    r"<!subteam\^[A-Z0-9]{2,30}(\|[@\w.-]{1,80})?>|<@[A-Z0-9]{2,30}>|<!here>|@[\w.-]{1,80}"
)


def _check_slack_handle(value: str | None) -> str:
    if value is None:
        return DEFAULT_BILLING_OPS_HANDLE
    if not _SLACK_HANDLE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ConfigError(
            f"SLACK_BILLING_OPS_HANDLE {shown!r} is not a Slack mention",
            hint="use the user group's mention, e.g. <!subteam^S0123ABCD|billing_ops>",
        )
    return value


def _check_http_url(name: str, url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} is not an http(s) URL", hint=f"set {name} to https://…")
    return url.rstrip("/")


def _check_smtp_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            "SMTP_URL is not an smtp:// or smtps:// URL",
            hint="use smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465",
        )
    try:
        parts.port  # noqa: B018 - a bad port raises only when read
    except ValueError:
        raise ConfigError("SMTP_URL has a bad port", hint="use a number, e.g. :587") from None
    return url


def _check_choice(name: str, value: str | None, choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    value = value.lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _check_email(name: str, value: str | None) -> str | None:
    if value is not None and "@" not in value:
        raise ConfigError(f"{name} is not an email address", hint=f"set {name} to name@example.com")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from an environment mapping (``os.environ`` by default)."""
    env = os.environ if env is None else env
    config_path = _clean(env, "BILLING_CONFIG")
    if config_path and not Path(config_path).is_file():
        raise ConfigError(
            f"BILLING_CONFIG points at {config_path}, which is not a file",
            hint="fix the path or unset BILLING_CONFIG",
        )
    outbox = _clean(env, "BILLING_OUTBOX_DIR")
    return Settings(
        stripe_secret_key=_check_stripe_key(_clean(env, "STRIPE_SECRET_KEY")),
        stripe_api_base=_check_http_url("STRIPE_API_BASE", _clean(env, "STRIPE_API_BASE")),
        stripe_webhook_secrets=_check_webhook_secrets(_clean(env, "STRIPE_WEBHOOK_SECRET")),
        stripe_timeout=_check_seconds(
            "STRIPE_TIMEOUT_SECONDS", _clean(env, "STRIPE_TIMEOUT_SECONDS"), DEFAULT_STRIPE_TIMEOUT
        ),
        stripe_batch_timeout=_check_seconds(
            "STRIPE_BATCH_TIMEOUT_SECONDS",
            _clean(env, "STRIPE_BATCH_TIMEOUT_SECONDS"),
            DEFAULT_STRIPE_BATCH_TIMEOUT,
        ),
        app_url=_check_http_url(
            "APP_URL", _clean(env, "APP_URL") or _clean(env, "NEXT_PUBLIC_APP_URL")
        ),
        database_url=_check_database_url(_clean(env, "BILLING_DATABASE_URL")),
        supabase_url=_check_http_url(
            "SUPABASE_URL", _clean(env, "SUPABASE_URL") or _clean(env, "NEXT_PUBLIC_SUPABASE_URL")
        ),
        supabase_service_role_key=_check_supabase_key(
            "SUPABASE_SERVICE_ROLE_KEY", _clean(env, "SUPABASE_SERVICE_ROLE_KEY")
        ),
        supabase_secret_key=_check_supabase_key(
            "SUPABASE_SECRET_KEY", _clean(env, "SUPABASE_SECRET_KEY")
        ),
        email_backend=_check_choice(
            "BILLING_EMAIL_BACKEND", _clean(env, "BILLING_EMAIL_BACKEND"), EMAIL_BACKENDS, "console"
        ),
        smtp_url=_check_smtp_url(_clean(env, "SMTP_URL")),
        email_from=_check_email("EMAIL_FROM", _clean(env, "EMAIL_FROM")),
        outbox_dir=Path(outbox) if outbox else None,
        sms_backend=_check_choice(
            "BILLING_SMS_BACKEND", _clean(env, "BILLING_SMS_BACKEND"), SMS_BACKENDS, "console"
        ),
        twilio_account_sid=_clean(env, "TWILIO_ACCOUNT_SID"),
        twilio_auth_token=_clean(env, "TWILIO_AUTH_TOKEN"),
        twilio_from=_clean(env, "TWILIO_FROM"),
        slack_webhook_url=_check_http_url("SLACK_WEBHOOK_URL", _clean(env, "SLACK_WEBHOOK_URL")),
        billing_ops_handle=_check_slack_handle(_clean(env, "SLACK_BILLING_OPS_HANDLE")),
        finance_lead_email=_check_email("FINANCE_LEAD_EMAIL", _clean(env, "FINANCE_LEAD_EMAIL")),
        retry_race_window=_check_race_window(_clean(env, "BILLING_RETRY_RACE_WINDOW")),
        actor=_clean(env, "BILLING_ACTOR") or default_actor(),
        config_path=Path(config_path) if config_path else None,
        debug=_clean(env, "BILLING_DEBUG") in ("1", "true", "yes"),
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``BILLING_CONFIG`` TOML document; one clear line when it cannot be read."""
    import tomllib  # only commands that read BILLING_CONFIG pay for the parser

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read BILLING_CONFIG {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"BILLING_CONFIG {path} is not valid TOML: {exc}") from None


def shown_value(variable: str, value: str) -> str:
    """A variable's raw value as a person may see it: secrets redacted as ``describe``
    redacts them, everything else as written."""
    attr = _ATTR_BY_VARIABLE.get(variable)
    if not value.strip():
        return "empty"
    if attr not in _SECRET_ATTRS:
        return value.strip()
    if attr == "slack_webhook_url":
        return "set (hidden)"
    if value.strip().startswith("sqlite:"):
        return value.strip()  # a path, no password (and urlsplit would drop a slash)
    if attr in _URL_SECRETS:
        return redact_url(value.strip())
    return ", ".join(redact(part.strip()) for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Override:
    """A variable set both in the environment and in the env file: the environment wins."""

    variable: str
    environment: str
    file: str

    @property
    def live_key(self) -> bool:
        """A live Stripe key that the file did not ask for."""
        return (
            self.variable == "STRIPE_SECRET_KEY"
            and "_live_" in self.environment
            and "_live_" not in self.file
        )


def env_overrides(file_values: Mapping[str, str | None], env: Mapping[str, str]) -> list[Override]:
    """The contract's variables an env file sets that the environment sets differently
    (real environment variables win over the file)."""
    known = set(variables())
    return [
        Override(name, env[name], value or "")
        for name, value in file_values.items()
        if name in known and name in env and env[name].strip() != (value or "").strip()
    ]


def variables() -> list[str]:
    """Every variable the contract names, for ``.env.example`` checks and ``doctor``."""
    return [*_ATTR_BY_VARIABLE, "NEXT_PUBLIC_APP_URL", "NEXT_PUBLIC_SUPABASE_URL", "BILLING_DEBUG"]
