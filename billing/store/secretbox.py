"""Secrets the server must read back (webhook signing secrets), kept so that
the database alone does not reveal them: wrapped under a master key that lives
in its own file, `<data dir>/master.key` (32 random bytes, mode 0600, created
on first start). A copy of the database without that file holds no usable
secret; a backup needs both.

The standard library has no cipher, so the wrap is built from HMAC-SHA256
alone (a stream cipher in counter mode, then encrypt-then-MAC):

    enc_key, mac_key = HMAC(master, "…encrypt"), HMAC(master, "…authenticate")
    keystream        = HMAC(enc_key, salt ‖ 0) ‖ HMAC(enc_key, salt ‖ 1) ‖ …
    ciphertext       = plaintext XOR keystream          (salt: 16 random bytes per wrap)
    tag              = HMAC(mac_key, "wrap1" ‖ salt ‖ ciphertext)
    stored text      = "wrap1:" + base64url(salt ‖ ciphertext ‖ tag)

Unwrapping checks the tag first (constant time): a changed value, or a value
wrapped under another master key, raises SecretError instead of giving back
garbage.
"""

import base64
import hashlib
import hmac
import os
import secrets

PREFIX = "wrap1:"
KEY_BYTES = 32
SALT_BYTES = 16
TAG_BYTES = 32
_BLOCK = hashlib.sha256().digest_size


class SecretError(ValueError):
    """A stored secret cannot be unwrapped (changed, or another master key)."""


class MasterKeyError(RuntimeError):
    """The master key file is unusable (wrong size, unreadable)."""


def _read_key(path):
    with open(path, "rb") as handle:
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"the master key file {path} must hold exactly {KEY_BYTES} bytes"
                             f" (it holds {len(key)}); restore it from a backup")
    return key


def load_master_key(path):
    """The master key in `path`, created (32 random bytes, 0600, its folder 0700)
    when missing. Two processes starting at once agree on one key: the new key
    is written to a private temporary file and linked into place, which fails
    if the other process got there first (then its key is read)."""
    if os.path.exists(path):
        return _read_key(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    temp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: use that one
    finally:
        os.unlink(temp)
    return _read_key(path)


def is_wrapped(value):
    return isinstance(value, str) and value.startswith(PREFIX)


class SecretBox:
    """Wraps and unwraps short secrets (text) under one master key."""

    def __init__(self, master_key):
        if len(master_key) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes")
        self._enc = hmac.new(master_key, b"meterline secretbox v1: encrypt", hashlib.sha256).digest()
        self._mac = hmac.new(master_key, b"meterline secretbox v1: authenticate", hashlib.sha256).digest()
        self._fingerprint = hmac.new(master_key, b"meterline secretbox v1: fingerprint", hashlib.sha256).digest()

    def fingerprint(self, text):
        """A keyed digest of `text` (hex): equal texts give equal digests, but
        without the master key a stored digest cannot be checked against guesses
        (a plain SHA-256 of a body holding a password could)."""
        return hmac.new(self._fingerprint, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def _keystream(self, salt, length):
        blocks = (length + _BLOCK - 1) // _BLOCK
        return b"".join(hmac.new(self._enc, salt + i.to_bytes(4, "big"), hashlib.sha256).digest()
                        for i in range(blocks))[:length]

    def _tag(self, salt, ciphertext):
        return hmac.new(self._mac, PREFIX.encode() + salt + ciphertext, hashlib.sha256).digest()

    def wrap(self, plaintext):
        """The stored form of `plaintext` (str): "wrap1:" + base64url text."""
        data = plaintext.encode("utf-8")
        salt = secrets.token_bytes(SALT_BYTES)
        ciphertext = bytes(a ^ b for a, b in zip(data, self._keystream(salt, len(data))))
        blob = salt + ciphertext + self._tag(salt, ciphertext)
        return PREFIX + base64.urlsafe_b64encode(blob).decode("ascii")

    def unwrap(self, stored):
        """The plaintext of a value made by wrap(); SecretError when it was
        changed or wrapped under another master key."""
        if not is_wrapped(stored):
            raise SecretError("the stored secret is not in the wrapped form")
        try:
            blob = base64.urlsafe_b64decode(stored[len(PREFIX):].encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SecretError("the stored secret is damaged (not base64)") from None
        if len(blob) < SALT_BYTES + TAG_BYTES:
            raise SecretError("the stored secret is damaged (too short)")
        salt, ciphertext, tag = blob[:SALT_BYTES], blob[SALT_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(salt, ciphertext)):
            raise SecretError("the stored secret does not match the master key: it was changed,"
                              " or the master key file is not the one it was wrapped with")
        data = bytes(a ^ b for a, b in zip(ciphertext, self._keystream(salt, len(ciphertext))))
        return data.decode("utf-8")
