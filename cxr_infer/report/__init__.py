"""The run report of ``cxr-infer --report``: ``OUT/report.html``, one page that works offline.

:class:`~cxr_infer.report.page.Report` collects the rows the run writes and renders the page
from them, the run record (``run.json``) and the metrics the run computed; the page links the
overlays and the small thumbnails (:mod:`~cxr_infer.report.thumbnails`) relatively and draws
its plots as inline SVG (:mod:`~cxr_infer.report.plots`). jinja2 and matplotlib are imported
only when a report is asked for.
"""
