"""Supabase's API keys and PostgREST's JWT check, as the stand-in models them.

Two layers stand in front of PostgREST on a hosted project:

1. **The API gateway** checks the ``apikey`` header (or ``?apikey=``). A legacy key is the
   project's ``anon`` or ``service_role`` JWT; the new keys (``sb_publishable_…``,
   ``sb_secret_…``) are *not* JWTs: the gateway maps them to the ``anon`` and
   ``service_role`` Postgres roles ("Publishable key → anon", "Secret keys … via the
   built-in service_role Postgres role", https://supabase.com/docs/guides/api/api-keys).
   Such a key may also travel in ``Authorization: Bearer`` only when it exactly equals the
   ``apikey`` header ("Known limitations and compatibility differences", same page), which
   is what supabase-py sends (``Client._get_auth_headers``); the gateway then forwards a
   short-lived JWT for the key's role. Any other non-JWT bearer reaches PostgREST and is
   rejected there as not a JWT (PGRST301 "Expected 3 parts in JWT; got 1", the error
   supabase-py users saw, supabase/supabase-py#1228).
2. **PostgREST** verifies the bearer JWT with the project's JWT secret (HS256), checks
   ``exp``/``nbf``/``iat`` with 30 s of clock skew, and takes the ``role`` claim, ``anon``
   (``db-anon-role``) when there is none (``src/PostgREST/Auth/Jwt.hs``;
   https://docs.postgrest.org/en/v12/references/auth.html).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from tests.postgrest.errors import PgrstError, jwt_claims_error, jwt_decode_error

#: PostgREST's allowed clock skew for exp/nbf/iat (``allowedSkewSeconds`` in Jwt.hs).
CLOCK_SKEW_SECONDS = 30
TEN_YEARS = 10 * 365 * 24 * 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], secret: str, *, alg: str = "HS256") -> str:
    """An HS256 JWT, as Supabase signs its legacy keys and user tokens."""
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def verify_jwt(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """The claims of a token PostgREST accepts, or the PGRST30x error it answers."""
    if token == "":
        raise jwt_decode_error("Empty JWT is sent in Authorization header")
    parts = token.split(".")
    if len(parts) != 3:
        raise jwt_decode_error(f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise jwt_decode_error("JWT cryptographic operation failed") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        # The secret is a symmetric key: any other algorithm (``none`` included) is refused.
        raise jwt_decode_error("Wrong or unsupported encoding algorithm")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise jwt_decode_error("JWT cryptographic operation failed")
    if not isinstance(claims, dict):
        raise jwt_claims_error("Parsing claims failed")
    now = time.time() if now is None else now
    for key, too_late, message in (
        ("exp", lambda v: now - CLOCK_SKEW_SECONDS > v, "JWT expired"),
        ("nbf", lambda v: now + CLOCK_SKEW_SECONDS < v, "JWT not yet valid"),
        ("iat", lambda v: now + CLOCK_SKEW_SECONDS < v, "JWT issued at future"),
    ):
        if key not in claims:
            continue
        value = claims[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise jwt_claims_error(f"The JWT '{key}' claim must be a number")
        if too_late(value):
            raise jwt_claims_error(message)
    return claims


def _opaque(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet + "-") for _ in range(22))
    check = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{prefix}{body}_{check}"


@dataclass(frozen=True)
class ProjectKeys:
    """One project's JWT secret and its four API keys, of the shapes Supabase issues."""

    project_ref: str
    jwt_secret: str
    anon: str  #: legacy ``anon`` JWT
    service_role: str  #: legacy ``service_role`` JWT
    publishable: str  #: ``sb_publishable_…`` (maps to ``anon``)
    secret: str  #: ``sb_secret_…`` (maps to ``service_role``)

    @classmethod
    def generate(cls, project_ref: str | None = None) -> ProjectKeys:
        ref = project_ref or "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))
        jwt_secret = secrets.token_urlsafe(30)
        issued = int(time.time())

        def legacy(role: str) -> str:
            # The payload Supabase's legacy keys carry (api-keys doc: role, iat, ~10y exp).
            claims = {"iss": "supabase", "ref": ref, "role": role, "iat": issued}
            return sign_jwt({**claims, "exp": issued + TEN_YEARS}, jwt_secret)

        return cls(
            project_ref=ref,
            jwt_secret=jwt_secret,
            anon=legacy("anon"),
            service_role=legacy("service_role"),
            publishable=_opaque("sb_publishable_"),
            secret=_opaque("sb_secret_"),
        )

    def user_token(self, role: str = "authenticated", **claims: Any) -> str:
        """A token signed with the project secret, e.g. a Supabase Auth user's."""
        now = int(time.time())
        return sign_jwt({"role": role, "iat": now, "exp": now + 3600, **claims}, self.jwt_secret)

    def opaque_role(self, key: str) -> str | None:
        """The role the gateway maps a new-style key to, or None for any other value."""
        if hmac.compare_digest(key, self.secret):
            return "service_role"
        if hmac.compare_digest(key, self.publishable):
            return "anon"
        return None

    def is_legacy_key(self, key: str) -> bool:
        return any(hmac.compare_digest(key, known) for known in (self.anon, self.service_role))


class GatewayError(PgrstError):
    """An answer from the API gateway, before PostgREST: ``{"message", "hint"}``, no code."""

    def body(self) -> bytes:
        return json.dumps({"message": self.message, "hint": self.hint}).encode()


def gateway_bearer(keys: ProjectKeys, apikey: str | None, authorization: str | None) -> str | None:
    """The bearer token the gateway forwards to PostgREST (None: no Authorization header).

    Raises the gateway's 401 for a missing or unknown ``apikey`` (the Kong ``key-auth``
    answers supabase-js users report: "No API key found in request", "Invalid API key").
    """
    if not apikey:
        raise GatewayError(
            401,
            "",
            "No API key found in request",
            None,
            "No `apikey` request header or url param was found.",
        )
    role = keys.opaque_role(apikey)
    if role is None and not keys.is_legacy_key(apikey):
        raise GatewayError(
            401,
            "",
            "Invalid API key",
            None,
            "Double check your Supabase `anon` or `service_role` API key.",
        )
    bearer = None
    if authorization is not None:
        # PostgREST reads only "Bearer <token>" (any case); other schemes count as no token.
        scheme, _, token = authorization.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
    if role is not None and (bearer is None or hmac.compare_digest(bearer, apikey)):
        # The gateway swaps an opaque key for a short-lived JWT of the key's role.
        now = int(time.time())
        claims = {"iss": "supabase", "ref": keys.project_ref, "role": role, "iat": now}
        return sign_jwt({**claims, "exp": now + 300}, keys.jwt_secret)
    return bearer
