"""What the pages and the HTML report show, computed and tested without a browser: tables of
layouts, predictions and audits, the Audit page's worked example, the HTML report.
"""
