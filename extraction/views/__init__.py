"""What the pages and the HTML report show, computed and tested without a browser: tables of
layouts, predictions and audits, the Audit page's worked example, the HTML report.

Modules: :mod:`.layouts` (which layouts to draw, attention categories, read descriptions),
:mod:`.predictions` (top-k tables, token strings), :mod:`.audit` (the audit's tables),
:mod:`.examples` (the Audit page's example file) and :mod:`.report_html` (a comparison or a self-check as
one self-contained HTML page).
"""
