"""E-mail addresses an invoice is sent to: exactly one mailbox, written
plainly (local@domain), so that it can go into a To: header as it is.

No display names, no comments, no quoting, no lists: a comma, semicolon,
angle bracket, space or line break could add a recipient or a header."""

MAX_ADDRESS = 254  # RFC 5321: the longest path an SMTP server must accept
MAX_LOCAL = 64
MAX_LABEL = 63
LOCAL_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~.")


def problem(text):
    """What is wrong with `text` as one e-mail address, or None when it is one."""
    if not isinstance(text, str):
        return "must be a string"
    if len(text) > MAX_ADDRESS:
        return f"must be at most {MAX_ADDRESS} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        return "must be one address, without spaces or line breaks"
    if text.count("@") != 1:
        return "must be exactly one address like name@example.com"
    local, _, domain = text.partition("@")
    if not _local_ok(local):
        return "is not a valid e-mail address (one address like name@example.com, no lists)"
    if not _domain_ok(domain):
        return "is not a valid e-mail address (the domain after @ is not a host name)"
    return None


def _local_ok(local):
    """The part before @: letters, digits and RFC 5322 atext symbols, dots between."""
    if not local or len(local) > MAX_LOCAL or local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return all(ch.isalnum() or ch in LOCAL_SYMBOLS for ch in local)


def _domain_ok(domain):
    """A host name with a dot (or localhost): labels of letters, digits and inner hyphens."""
    if domain == "localhost":
        return True
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    for label in labels:
        if not label or len(label) > MAX_LABEL or label.startswith("-") or label.endswith("-"):
            return False
        if not all(ch.isalnum() or ch == "-" for ch in label):
            return False
    return True
