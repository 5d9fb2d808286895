"""Reports: the JSON report (versioned schema, shipped JSON Schema) and the console summary."""

from ._json import SCHEMA_ID as SCHEMA_ID
from ._json import build_report as build_report
from ._json import check_writable as check_writable
from ._json import event_loop_name as event_loop_name
from ._json import write_json as write_json
from ._schema import load_schema as load_schema
from ._schema import report_problems as report_problems
from ._summary import Summary as Summary
from ._summary import print_summary as print_summary

__all__ = [
    "SCHEMA_ID",
    "Summary",
    "build_report",
    "check_writable",
    "event_loop_name",
    "load_schema",
    "print_summary",
    "report_problems",
    "write_json",
]
