"""Cold import time of each handler module: a fresh interpreter per sample, median of several.

Baseline, measured in the same run: the fresh interpreter doing nothing but timing an empty block.
Target (issue 2): ≤ 150 ms per handler module, heavy imports deferred to where they are used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import median_ms, write_result

REPO = Path(__file__).resolve().parent.parent
SAMPLES = int(os.environ.get("BENCH_IMPORT_SAMPLES", "9"))

_PROBE = """
import importlib.util, sys, time
path = sys.argv[1]
t0 = time.perf_counter()
if path != "-":
    spec = importlib.util.spec_from_file_location("handler_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
print(time.perf_counter() - t0)
"""


def _sample(path: str) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'layers' / 'core'}:{REPO}",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run() -> dict[str, Any]:
    baseline = median_ms([_sample("-") for _ in range(SAMPLES)])
    handlers = {}
    for app in sorted((REPO / "functions").glob("*/app.py")):
        _sample(str(app))  # warm the OS page cache and .pyc files: we measure imports, not disk
        handlers[app.parent.name] = median_ms([_sample(str(app)) for _ in range(SAMPLES)])
    result = {
        "benchmark": "cold_import",
        "samples_per_module": SAMPLES,
        "baseline_empty_ms": baseline,
        "handlers_ms": handlers,
        "target_ms": 150,
        "within_target": {name: ms <= 150 for name, ms in handlers.items()},
    }
    write_result("cold_import", result)
    return result
