"""glioma-c6-bench harness: data → convert → adapter → metrics → report.

Importing this package must stay cheap: no torch, no model library (a test enforces it).
"""

__version__ = "0.1.0"
