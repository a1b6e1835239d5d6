"""The hand-written invoice PDF: structurally valid, and poppler reads back what we meant to print.

Needs poppler-utils (pdftotext, pdfinfo). A missing tool skips these tests, and fails them in CI (tests/tools.py).
"""

import html
import re
import subprocess
from decimal import Decimal

import pytest

from billing.exports.pdf import invoice_pdf
from tests import tools


def _invoice(**overrides):
    invoice = {
        "id": 7, "number": "INV-2025-0042", "status": "issued", "payment_status": "unpaid", "currency": "USD",
        "period_start": "2025-09-01T04:00:00Z", "period_end": "2025-10-01T04:00:00Z",
        "local_period": {"start": "2025-09-01", "end": "2025-10-01"},
        "lines": [
            {"type": "base", "description": "Pro plan base fee", "meter": None, "quantity": None,
             "unit_price": None, "amount": "49.00"},
            {"type": "usage", "description": "API calls", "meter": "api_calls", "quantity": 1234567,
             "unit_price": "0.0020", "amount": "2449.13"},
            {"type": "usage", "description": "Storage GB-hours", "meter": "storage", "quantity": Decimal("7312.5"),
             "unit_price": "0.000137", "amount": "1.00"},
            {"type": "discount", "description": "Coupon WELCOME10", "meter": None, "quantity": None,
             "unit_price": None, "amount": "-249.91"},
        ],
        "subtotal": "2499.13", "discount": "-249.91", "tax": "179.94", "total": "2429.16",
        "credits_applied": "-10.00", "amount_due": "2419.16", "amount_paid": "0.00",
        "issued_at": "2025-10-01T06:00:00Z", "due_at": "2025-10-31T06:00:00Z",
    }
    invoice.update(overrides)
    return invoice


CUSTOMER = {"id": 3, "name": "Northwind Traders", "email": "ops@northwind.example",
            "billing_email": "ap@northwind.example", "billing_address": "12 Harbour Street\nBristol BS1 4XY",
            "timezone": "Europe/London"}


def _tool(name):
    return tools.need(name, "poppler-utils")


def _run(tmp_path, pdf, *args):
    target = tmp_path / "invoice.pdf"
    target.write_bytes(pdf)
    done = subprocess.run([_tool(args[0]), *args[1:], str(target), *(["-"] if args[0] == "pdftotext" else [])],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert b"Syntax Error" not in done.stderr and b"Syntax Warning" not in done.stderr, done.stderr
    return done.stdout.decode("utf-8")


def _text(tmp_path, pdf):
    return _run(tmp_path, pdf, "pdftotext", "-layout")


def _words(tmp_path, pdf):
    """(text, xMin, yMin, xMax) of every word, from pdftotext -bbox."""
    out = _run(tmp_path, pdf, "pdftotext", "-bbox")
    found = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', out)
    return [(html.unescape(w), Decimal(x0), Decimal(y0), Decimal(x1)) for x0, y0, x1, w in found]


def test_structure_header_xref_trailer():
    pdf = invoice_pdf(_invoice(), CUSTOMER)
    assert pdf.startswith(b"%PDF-1.")
    assert pdf.rstrip(b"\r\n").endswith(b"%%EOF")
    assert max(pdf.split(b"\n", 2)[1]) >= 128          # binary comment line
    startxref = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf).group(1))
    assert pdf[startxref:].startswith(b"xref")
    header = re.match(rb"xref\r?\n(\d+) (\d+)\r?\n", pdf[startxref:])
    first, count = int(header.group(1)), int(header.group(2))
    assert first == 0 and count > 5
    table = pdf[startxref + header.end():startxref + header.end() + 20 * count]
    entries = [table[i:i + 20] for i in range(0, len(table), 20)]
    assert entries[0] == b"0000000000 65535 f \n"
    for number, entry in enumerate(entries[1:], 1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry), entry
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj" % number), (number, pdf[offset:offset + 20])
    assert pdf.count(b" 0 obj") == count - 1
    assert re.search(rb"trailer\s*<<[^>]*/Size %d\b" % count, pdf)
    assert b"/Helvetica /Encoding /WinAnsiEncoding" in pdf and b"/Helvetica-Bold /Encoding /WinAnsiEncoding" in pdf


def test_stream_lengths_are_exact():
    pdf = invoice_pdf(_invoice(), CUSTOMER)
    streams = list(re.finditer(rb"<< /Length (\d+) >>\nstream\n", pdf))
    assert streams
    for match in streams:
        end = match.end() + int(match.group(1))
        assert pdf[end:end + 10] == b"\nendstream"


def test_pdftotext_reads_the_invoice(tmp_path):
    invoice = _invoice()
    text = _text(tmp_path, invoice_pdf(invoice, CUSTOMER))
    for expected in ["Invoice INV-2025-0042", "Meterline", "Northwind Traders", "ap@northwind.example",
                     "12 Harbour Street", "Bristol BS1 4XY", "2025-10-01", "2025-10-31", "Amount (USD)",
                     "1,234,567", "0.000137", "Page 1 of 1"]:
        assert expected in text
    assert "ops@northwind.example" not in text  # the billing e-mail wins
    for line in invoice["lines"]:
        assert line["description"] in text and line["amount"] in text
    assert re.search(r"Period:\s+2025-09-01 \u2013 2025-09-30", text)   # the exclusive end, printed inclusive
    assert re.search(r"Total \(USD\)\s+2429\.16", text)
    assert re.search(r"Amount due \(USD\)\s+2419\.16", text)
    for label in ("Subtotal", "Discount", "Tax", "Credits applied", "Amount paid"):
        assert re.search(label + r"\s+-?\d+\.\d\d", text), label


def test_numbers_are_right_aligned(tmp_path):
    words = _words(tmp_path, invoice_pdf(_invoice(), CUSTOMER))
    amounts = [w for w in words if w[0] in ("49.00", "2449.13", "1.00", "-249.91", "2429.16", "-10.00", "2419.16")]
    right_edges = {x1 for _, _, _, x1 in amounts}
    assert len(amounts) == 8                               # -249.91 twice: the coupon line and the discount total
    assert max(right_edges) - min(right_edges) < Decimal("0.5"), sorted(right_edges)


def test_awkward_customer_name(tmp_path):
    customer = dict(CUSTOMER, name="Zo\u00eb (Ltd) \\ \u6771\u4eac", billing_email=None,
                    billing_address="Line (1)\r\nLine \\2\\\n\n\tLine 3")
    pdf = invoice_pdf(_invoice(), customer)
    text = _text(tmp_path, pdf)
    assert "Zo\u00eb (Ltd) \\ ??" in text
    assert "ops@northwind.example" in text        # no billing e-mail: the plain one
    assert "Line (1)" in text and "Line \\2\\" in text and "Line 3" in text


def test_long_description_stays_out_of_the_numbers(tmp_path):
    long = "Metered " + " ".join(f"w{i:02d}" for i in range(40)) + " Supercalifragilistic" * 8
    lines = [{"type": "usage", "description": long, "meter": "m", "quantity": Decimal("123456789.123456"),
              "unit_price": "0.000001", "amount": "123456789012.34"}]
    words = _words(tmp_path, invoice_pdf(_invoice(lines=lines), CUSTOMER))
    numbers_start = min(x0 for text, x0, _, _ in words if text in ("123,456,789.123456", "0.000001", "Quantity"))
    description = [w for w in words if w[0].startswith(("Metered", "w", "Super"))]
    assert description[0][0] == "Metered" and len(description) > 10
    assert all(x1 < numbers_start for _, _, _, x1 in description)
    assert len({round(y0) for _, _, y0, _ in description}) <= 3     # at most three lines, then cut


def test_many_lines_span_pages(tmp_path):
    lines = [{"type": "usage", "description": f"Usage item {i:03d}", "meter": "m", "quantity": i,
              "unit_price": "1.00", "amount": f"{i}.17"} for i in range(80)]
    pdf = invoice_pdf(_invoice(lines=lines), CUSTOMER)
    page_objects = len(re.findall(rb"/Type /Page\b", pdf))
    assert int(re.search(r"Pages:\s+(\d+)", _run(tmp_path, pdf, "pdfinfo")).group(1)) == page_objects
    pages = page_objects
    assert pages > 1
    text = _text(tmp_path, pdf)
    page_texts = text.rstrip("\f").split("\f")
    assert len(page_texts) == pages
    for number, page_text in enumerate(page_texts, 1):
        assert f"Page {number} of {pages}" in page_text
        assert "Description" in page_text                   # the table header on every page
    for line in lines:
        assert re.search(line["description"] + r"\s+\d+\s+1\.00\s+" + re.escape(line["amount"]), text)
    assert "Amount due" in page_texts[-1] and "Amount due" not in page_texts[0]


def test_draft_and_void(tmp_path):
    draft = _text(tmp_path, invoice_pdf(_invoice(number=None, status="draft", issued_at=None, due_at=None), CUSTOMER))
    assert "Draft invoice" in draft and "INV-" not in draft and "Issued:" not in draft
    void = _text(tmp_path, invoice_pdf(_invoice(status="void"), CUSTOMER))
    assert "VOID" in void and "Invoice INV-2025-0042" in void


def test_no_lines(tmp_path):
    text = _text(tmp_path, invoice_pdf(_invoice(lines=[]), CUSTOMER))
    assert "No charges" in text and "Amount due (USD)" in text


def test_deterministic():
    assert invoice_pdf(_invoice(), CUSTOMER) == invoice_pdf(_invoice(), CUSTOMER)
    assert invoice_pdf(_invoice(), CUSTOMER) != invoice_pdf(_invoice(total="2429.17"), CUSTOMER)
