"""The benchmark harness still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Importable because tests/ is a package: pytest puts the repository root on sys.path.
from benchmarks._catalog import CONFIGS, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent

#: What a cell may say instead of a measurement.
SKIPPED_STATES = {"not installed", "not applicable"}


def run_benchmarks(*args: str, module: str = "benchmarks") -> subprocess.CompletedProcess[str]:
    """Run ``python -m benchmarks`` (or another `module` of it) from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class TestSmoke:
    @pytest.mark.timeout(300)
    def test_every_cell_is_reported(self, tmp_path: Path) -> None:
        """A smoke run writes a measurement or a skip marker for every workload x config."""
        output = tmp_path / "smoke.json"
        completed = run_benchmarks("--smoke", "--json", str(output))
        assert completed.returncode == 0, completed.stderr[-2000:]
        document = json.loads(output.read_text("utf-8"))
        assert document["schema"] == "taskscope.bench/1"
        assert document["settings"]["smoke"] is True
        results = document["results"]
        assert set(results) == {workload.name for workload in WORKLOADS}
        for workload in WORKLOADS:
            cells = results[workload.name]
            assert set(cells) == {config.name for config in CONFIGS}, workload.name
            for config in CONFIGS:
                cell = cells[config.name]
                label = f"{workload.name}/{config.name}: {cell}"
                if config.applies_to(workload) and config.installed():
                    assert cell["status"] == "ok", label
                    assert cell["median"] >= 0, label
                    assert "ratio" in cell, label
                else:
                    assert cell["status"] in SKIPPED_STATES, label
        assert document["budgets"] == [] or all("ok" in b for b in document["budgets"])
        assert "workload" in completed.stdout


class TestBadInput:
    @pytest.mark.parametrize(
        ("option", "value", "kind"),
        [
            pytest.param("--workloads", "spawn,nope", "workload", id="workload"),
            pytest.param("--configs", "nope", "configuration", id="configuration"),
        ],
    )
    def test_unknown_name_lists_the_valid_ones(self, option: str, value: str, kind: str) -> None:
        """An unknown name exits 2 with one line that lists every valid name."""
        completed = run_benchmarks(option, value)
        assert completed.returncode == 2
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1, completed.stderr
        assert f"unknown {kind} 'nope'" in lines[0]
        valid = WORKLOADS if kind == "workload" else CONFIGS
        assert all(item.name in lines[0] for item in valid)
        assert completed.stdout == ""


class TestInstructions:
    """``python -m benchmarks.instructions`` (the callgrind counter): its command line."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--workloads", "mem-live"], "unknown workload 'mem-live'; valid workloads: spawn"),
            (["--configs", "nope"], "unknown configuration 'nope'; valid configurations: plain"),
            (["--count", "0"], "--count must be a positive number of operations, not 0"),
        ],
    )
    def test_bad_input_is_one_line(self, args: list[str], message: str) -> None:
        completed = run_benchmarks(*args, module="benchmarks.instructions")
        assert completed.returncode == 2
        assert completed.stdout == ""
        lines = completed.stderr.splitlines()
        assert len(lines) == 1
        assert message in lines[0]

    def test_counts_per_operation_from_valgrind_summaries(self, tmp_path: Path) -> None:
        """Counts are (run at N - run at 0) / N, read from callgrind's or cachegrind's
        summary; a stand-in valgrind reports counts that grow with the sizes it runs."""
        from benchmarks._catalog import CONFIGS_BY_NAME, WORKLOADS_BY_NAME
        from benchmarks.instructions import per_operation

        fake = tmp_path / "valgrind"
        fake.write_text(
            f"#!{sys.executable}\n"
            "import subprocess, sys\n"
            "args = [a for a in sys.argv[1:] if not a.startswith('--')]\n"
            "done = subprocess.run(args, capture_output=True, text=True)\n"
            "sys.stdout.write(done.stdout)\n"
            "n = sum(int(a) for a in args if a.isdigit())\n"
            "if '--cache-sim=yes' in sys.argv:\n"
            "    print(f'==1== I   refs:      {7 * n + 100:,}', file=sys.stderr)\n"
            "    print(f'==1== D1  misses:    {3 * n + 10:,}  (1 rd + 2 wr)', file=sys.stderr)\n"
            "else:\n"
            "    print(f'==1== Collected : {5 * n + 100}', file=sys.stderr)\n"
        )
        fake.chmod(0o755)
        spawn, plain = WORKLOADS_BY_NAME["spawn"], CONFIGS_BY_NAME["plain"]
        counted = per_operation(str(fake), spawn, plain, 2000)
        assert (counted.instructions, counted.d1_misses) == (5, None)
        simulated = per_operation(str(fake), spawn, plain, 2000, cache=True)
        assert (simulated.instructions, simulated.d1_misses) == (7, 3)
