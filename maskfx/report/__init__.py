"""The demo's report: measurements as data, PNG plots read from ``maskfx.structure``, and the
``report.md`` / ``report.json`` writer."""
from maskfx.measure import Measurement, count_macs, count_parameters
from maskfx.report.latency import ort_latency
from maskfx.report.writer import write_report

__all__ = ["Measurement", "count_macs", "count_parameters", "ort_latency", "write_report"]
