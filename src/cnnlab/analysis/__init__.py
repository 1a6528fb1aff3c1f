"""The lectures' arithmetic for any model: per-layer table, receptive fields, formulas, ERF.

``summarize`` returns data; :mod:`cnnlab.analysis.render` turns it into tables, JSON, CSV
or Markdown.
"""

from cnnlab.analysis import formulas
from cnnlab.analysis.erf import EffectiveRF, effective_receptive_field
from cnnlab.analysis.receptive_field import ReceptiveField
from cnnlab.analysis.summary import CONVENTIONS, Row, Summary, summarize

__all__ = [
    "CONVENTIONS", "EffectiveRF", "ReceptiveField", "Row", "Summary",
    "effective_receptive_field", "formulas", "summarize",
]
