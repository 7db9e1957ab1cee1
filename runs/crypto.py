"""
Encryption of Champ API tokens at rest: the only module that sees key material.

Tokens are sealed with Fernet (AES-128-CBC + HMAC-SHA256, authenticated).
The organisation id and the token row's uid are sealed *inside* the plaintext
and checked on the way out, so a ciphertext copied to another row or another
organisation does not decrypt. Keys come from ``settings.CHAMP_PORTAL_TOKEN_KEYS``
(comma-separated, newest first): the first encrypts, every key decrypts, which
is what makes rotation possible (``manage.py rotate_token_keys``).
"""

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

TOKEN_PREFIX = "api_"


class TokenDecryptError(Exception):
    """The ciphertext cannot be opened: wrong key, corrupted, or bound to another row."""


def parse_keys(raw: str) -> list[Fernet]:
    """Parse a comma-separated list of Fernet keys, raising ImproperlyConfigured."""
    parts = [part.strip() for part in (raw or "").split(",") if part.strip()]
    if not parts:
        raise ImproperlyConfigured("CHAMP_PORTAL_TOKEN_KEYS is empty: at least one key is needed.")
    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part))
        except (ValueError, TypeError):
            # Never echo the value: it is key material.
            raise ImproperlyConfigured(
                f"CHAMP_PORTAL_TOKEN_KEYS: key #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes; generate one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)."
            ) from None
    return keys


@lru_cache(maxsize=4)
def _multi_fernet(raw: str) -> MultiFernet:
    return MultiFernet(parse_keys(raw))


def _keyring() -> MultiFernet:
    return _multi_fernet(settings.CHAMP_PORTAL_TOKEN_KEYS)


def generate_key() -> str:
    """Return a new random key in the format CHAMP_PORTAL_TOKEN_KEYS expects."""
    return Fernet.generate_key().decode()


def _binding(organisation_id: int, token_uid: str) -> dict:
    return {"org": organisation_id, "uid": str(token_uid)}


def encrypt_token(plaintext: str, *, organisation_id: int, token_uid: str) -> str:
    """Seal ``plaintext`` for one token row of one organisation under the newest key."""
    payload = json.dumps({**_binding(organisation_id, token_uid), "secret": plaintext})
    return _keyring().encrypt(payload.encode()).decode()


def decrypt_token(ciphertext: str, *, organisation_id: int, token_uid: str) -> str:
    """Open a ciphertext sealed for exactly this row, or raise TokenDecryptError."""
    try:
        payload = json.loads(_keyring().decrypt(ciphertext.encode()))
    except (InvalidToken, ValueError, TypeError, AttributeError):
        raise TokenDecryptError("the token cannot be decrypted with the configured keys") from None
    if not isinstance(payload, dict) or payload.get("secret") is None:
        raise TokenDecryptError("the token ciphertext is malformed")
    if {k: payload.get(k) for k in ("org", "uid")} != _binding(organisation_id, token_uid):
        raise TokenDecryptError("the token ciphertext belongs to another row")
    return payload["secret"]


def reencrypt_token(ciphertext: str, *, organisation_id: int, token_uid: str) -> str:
    """Re-seal a ciphertext under the newest key, checking its binding first."""
    plaintext = decrypt_token(ciphertext, organisation_id=organisation_id, token_uid=token_uid)
    return encrypt_token(plaintext, organisation_id=organisation_id, token_uid=token_uid)


def mask_token(plaintext: str) -> str:
    """The only form of a token ever shown again: ``api_…wxyz``."""
    return f"{TOKEN_PREFIX}…{plaintext[-4:]}"
