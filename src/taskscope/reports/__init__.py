"""Reports: the JSON report (versioned schema) and the console summary."""

from ._json import SCHEMA_ID as SCHEMA_ID
from ._json import build_report as build_report
from ._json import write_json as write_json
from ._summary import print_summary as print_summary

__all__ = ["SCHEMA_ID", "build_report", "print_summary", "write_json"]
