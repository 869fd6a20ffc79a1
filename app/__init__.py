"""magorder: predict the magnetic ordering of an inorganic compound from its formula and density."""

from __future__ import annotations

__version__ = "0.1.0"
