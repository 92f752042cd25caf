"""Reports and figures: the evaluation pack, study comparisons, tuning trials and the plots they draw.

matplotlib is set up in one place, :mod:`mnist99.reports.plots` (the Agg backend: files, no display);
every module here that draws imports ``plt`` from it.
"""
