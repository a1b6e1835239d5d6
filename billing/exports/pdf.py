"""Invoice PDF, written by hand: PDF 1.4, the standard Type1 Helvetica fonts, WinAnsiEncoding.

Pure and deterministic: the invoice's JSON view in, bytes out; no clock, no IDs, no compression,
so the same input always gives the same bytes. Money stays the strings it arrives as; geometry is
integer arithmetic in millipoints (1/1000 pt), so no float appears anywhere.
"""

import unicodedata
from datetime import date, timedelta
from decimal import Decimal

# Adobe AFM advance widths (1/1000 em) of WinAnsi codes 32..126 (space ... asciitilde).
_REGULAR = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)
_BOLD = (
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584)
_SPECIAL = {"\u2026": 1000, "\u2013": 556, "\u2014": 1000, "\u2022": 350, "\u20ac": 556}

PAGE_W, PAGE_H = 595, 842                  # A4, points
LEFT, RIGHT = 50_000, 545_000              # margins, millipoints
X0, X1 = LEFT + 4_000, RIGHT - 4_000       # table cell edges, millipoints
TOP, BOTTOM, FOOTER = 792, 64, 36          # baselines, points
SIZE, LEAD, GAP = 9, 12, 16_000            # table font size, line spacing, column gap
STATUS = {"draft": "Draft", "pending_approval": "Pending approval", "issued": "Issued",
          "paid": "Paid", "void": "VOID"}
TOTALS = (("Subtotal", "subtotal", False), ("Discount", "discount", False), ("Tax", "tax", False),
          ("Total", "total", True), ("Credits applied", "credits_applied", False),
          ("Amount due", "amount_due", True), ("Amount paid", "amount_paid", False))


def _clean(text):
    """What cp1252 can carry: control characters become spaces, anything unencodable '?'."""
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(text))
    return text.encode("cp1252", "replace").decode("cp1252")


def _char_width(ch, bold):
    table = _BOLD if bold else _REGULAR
    if " " <= ch <= "~":
        return table[ord(ch) - 32]
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    base = unicodedata.normalize("NFKD", ch)[:1]        # é -> e, Ö -> O
    return table[ord(base) - 32] if " " <= base <= "~" else 556


def _width(text, size, bold=False):
    """Advance width of already-cleaned text, in millipoints."""
    return sum(_char_width(ch, bold) for ch in text) * size


def _num(mpt):
    sign, (whole, frac) = "-" if mpt < 0 else "", divmod(abs(mpt), 1000)
    return f"{sign}{whole}.{frac:03d}".rstrip("0").rstrip(".")


def _escape(raw):
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _cut(text, max_mpt, size, bold=False):
    """text shortened to fit max_mpt with an ellipsis appended."""
    while text and _width(text + "\u2026", size, bold) > max_mpt:
        text = text[:-1]
    return text.rstrip() + "\u2026"


def _fit(text, max_mpt, size, bold=False):
    """One line no wider than max_mpt: cut with an ellipsis when needed."""
    text = _clean(text)
    return text if _width(text, size, bold) <= max_mpt else _cut(text, max_mpt, size, bold)


def _wrap(text, max_mpt, size, bold=False, max_lines=3):
    """Word-wrap into at most max_lines lines; over-long words are broken, the overflow cut."""
    lines, cur = [], ""
    for word in _clean(text).split():
        trial = f"{cur} {word}" if cur else word
        if _width(trial, size, bold) <= max_mpt:
            cur = trial
            continue
        if cur:
            lines.append(cur)
        while _width(word, size, bold) > max_mpt:
            cut = len(word) - 1
            while cut > 1 and _width(word[:cut], size, bold) > max_mpt:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        cur = word
    if cur or not lines:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [_cut(lines[max_lines - 1], max_mpt, size, bold)]
    return lines


class _Page:
    def __init__(self):
        self.ops = []

    def text(self, x, y, text, size=SIZE, bold=False, right=False, gray=False):
        """x in millipoints (the right edge when right=True), y a baseline in points."""
        text = _clean(text)
        x -= _width(text, size, bold) if right else 0
        self.ops.append(b"BT %s g /F%d %d Tf %s %d Td (%s) Tj ET\n" % (
            b"0.4" if gray else b"0", 2 if bold else 1, size, _num(x).encode(), y,
            _escape(text.encode("cp1252"))))

    def rule(self, y, x0=LEFT, x1=RIGHT, gray=b"0.8"):
        self.ops.append(b"%s G 0.5 w %s %d m %s %d l S\n" % (gray, _num(x0).encode(), y, _num(x1).encode(), y))

    def band(self, y, height):
        self.ops.append(b"0.93 g %s %d %s %d re f\n" % (_num(LEFT).encode(), y, _num(RIGHT - LEFT).encode(), height))


def _quantity(value):
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, ",f")
    return str(value)


def _period(invoice):
    """The local billing period with its inclusive last day (the stored end is exclusive)."""
    local = invoice.get("local_period") or {}
    start, end = local.get("start") or invoice.get("period_start"), local.get("end") or invoice.get("period_end")
    if not start or not end:
        return None
    try:
        last = date.fromisoformat(str(end)[:10]) - timedelta(days=1)
    except ValueError:
        return None
    return f"{str(start)[:10]} \u2013 {last.isoformat()}"


def _first_page_header(page, invoice, customer, seller, title):
    y = TOP - 14
    page.text(LEFT, y, _fit(title, 300_000, 20, True), 20, bold=True)
    page.text(RIGHT, y, _fit(seller, 180_000, 14, True), 14, bold=True, right=True)
    status, payment = invoice.get("status"), invoice.get("payment_status")
    y -= 22
    if status == "void":
        page.text(LEFT, y, "Status: VOID", 11, bold=True)
    else:
        line = "Status: " + STATUS.get(status, str(status or "").replace("_", " ").capitalize())
        if payment and status not in ("draft", "pending_approval"):
            line += "     Payment: " + str(payment).replace("_", " ").capitalize()
        page.text(LEFT, y, line, 10, gray=True)
    y -= 34
    page.text(LEFT, y, "Bill to", 8, bold=True, gray=True)
    left_y = y - 15
    for text in _wrap(customer.get("name") or "", 270_000, 11, True, 2):
        page.text(LEFT, left_y, text, 11, bold=True)
        left_y -= 14
    email = customer.get("billing_email") or customer.get("email")
    address = str(customer.get("billing_address") or "").replace("\r\n", "\n").replace("\r", "\n")
    for part in ([email] if email else []) + [p.strip() for p in address.split("\n") if p.strip()][:6]:
        for text in _wrap(part, 270_000, 10, max_lines=2):
            page.text(LEFT, left_y, text, 10)
            left_y -= 13
    facts = [("Invoice number:", invoice.get("number") or "Draft"),
             ("Issued:", (invoice.get("issued_at") or "")[:10]), ("Due:", (invoice.get("due_at") or "")[:10]),
             ("Period:", _period(invoice)), ("Currency:", invoice.get("currency"))]
    right_y = y
    for label, value in facts:
        if value:
            page.text(345_000, right_y, label, 10, gray=True)
            page.text(RIGHT, right_y, _fit(value, 120_000, 10), 10, right=True)
            right_y -= 14
    return min(left_y, right_y) - 22


def _continued_header(page, title, seller):
    page.text(LEFT, TOP - 10, _fit(title + " (continued)", 320_000, 12, True), 12, bold=True)
    page.text(RIGHT, TOP - 10, _fit(seller, 160_000, 12, True), 12, bold=True, right=True)
    return TOP - 44


def invoice_pdf(invoice: dict, customer: dict, seller: str = "Meterline") -> bytes:
    """The invoice as a printable PDF (A4): header, the lines table over as many pages as needed, totals."""
    number, currency = invoice.get("number"), _clean(invoice.get("currency") or "")
    title = f"Invoice {number}" if number else "Draft invoice"
    unit = f" ({currency})" if currency else ""
    rows = [(line.get("description") or "", _quantity(line.get("quantity")), line.get("unit_price") or "",
             line.get("amount") or "") for line in invoice.get("lines") or ()]
    table = _Table(("Description", "Quantity", "Unit price", "Amount" + unit), rows)
    first = _Page()
    pages = [first]
    y = table.header(first, _first_page_header(first, invoice, customer, seller, title))
    y = _table_rows(pages, table, y, title, seller)
    _totals(pages, invoice, unit, y, title, seller)
    for n, page in enumerate(pages, 1):
        page.text(LEFT, FOOTER, _fit(f"{title} \u00b7 {seller}", 300_000, 8), 8, gray=True)
        page.text(RIGHT, FOOTER, f"Page {n} of {len(pages)}", 8, gray=True, right=True)
    return _document(pages, title)


class _Table:
    """The lines table's layout: numeric columns as wide as their widest cell
    (within bounds), laid out from the right margin; the description takes the rest."""

    def __init__(self, heads, rows):
        self.heads, self.rows = heads, rows
        self.widths = [min(max([_width(heads[c], SIZE, True)] + [_width(_clean(r[c]), SIZE) for r in rows]
                               + [60_000]), 110_000) for c in (1, 2, 3)]
        quantity, price, amount = self.widths
        quantity_right = X1 - amount - price - 2 * GAP
        self.rights = [quantity_right, X1 - amount - GAP, X1]
        self.desc_width = quantity_right - quantity - GAP - X0

    def header(self, page, y):
        """Draw the column heads at baseline `y`; the first row's baseline."""
        description, *numbers = self.heads
        page.band(y - 5, 17)
        page.text(X0, y, description, bold=True)
        for right, head in zip(self.rights, numbers):
            page.text(right, y, head, bold=True, right=True)
        return y - 19


def _table_rows(pages, table, y, title, seller):
    """Draw the table's rows from baseline `y`, on new pages as needed; the baseline after them."""
    page = pages[-1]
    for desc, *numbers in table.rows:
        wrapped = _wrap(desc, table.desc_width, SIZE)
        bottom = y - LEAD * (len(wrapped) - 1) - 6
        if bottom < BOTTOM:
            page = _Page()
            pages.append(page)
            y = table.header(page, _continued_header(page, title, seller))
            bottom = y - LEAD * (len(wrapped) - 1) - 6
        for i, text in enumerate(wrapped):
            page.text(X0, y - LEAD * i, text)
        for right, width, value in zip(table.rights, table.widths, numbers):
            page.text(right, y, _fit(value, width, SIZE), right=True)
        page.rule(bottom)
        y = bottom - 13
    if not table.rows:
        page.text(X0, y, "No charges in this period.", gray=True)
        y -= 19
    return y


def _totals(pages, invoice, unit, y, title, seller):
    """Draw the totals below baseline `y` (on a new page when they do not fit)."""
    page = pages[-1]
    if y - 15 * len(TOTALS) - 10 < BOTTOM:
        page = _Page()
        pages.append(page)
        y = _continued_header(page, title, seller)
    y -= 8
    label_x = X1 - 230_000
    for label, key, strong in TOTALS:
        if strong:
            y -= 4
            page.rule(y + 13, label_x - 4_000, RIGHT, gray=b"0.3")
        size = 11 if key == "amount_due" else 10
        page.text(label_x, y, label + (unit if strong else ""), size, bold=strong)
        page.text(X1, y, _fit(invoice.get(key) or "", 120_000, size, strong), size, bold=strong, right=True)
        y -= 16 if strong else 15


def _document(pages, title):
    fonts = b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", None, fonts % b"Helvetica", fonts % b"Helvetica-Bold",
               b"<< /Title (%s) /Producer (Meterline) >>" % _escape(title.encode("ascii", "replace"))]
    kids = []
    for page in pages:
        content = b"".join(page.ops)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 3 0 R"
                       b" /F2 4 0 R >> >> /Contents %d 0 R >>" % (PAGE_W, PAGE_H, len(objects)))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
