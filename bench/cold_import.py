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
import importlib, importlib.util, pathlib, sys, time
path, full = sys.argv[1], sys.argv[2] == "full"
t0 = time.perf_counter()
if path != "-":
    sys.path.append(str(pathlib.Path(path).parent))
    spec = importlib.util.spec_from_file_location("handler_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if full:  # what the first request imports too: the function's other modules and the settings
        for sibling in sorted(pathlib.Path(path).parent.glob("*.py")):
            if sibling.name != "app.py":
                importlib.import_module(sibling.stem)
        importlib.import_module("agentdb.config")
print(time.perf_counter() - t0)
"""


def _sample(path: str, full: bool = False) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'layers' / 'core'}:{REPO}",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    probe = [sys.executable, "-c", _PROBE, path, "full" if full else "module"]
    out = subprocess.run(probe, capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run() -> dict[str, Any]:
    baseline = median_ms([_sample("-") for _ in range(SAMPLES)])
    handlers, first_request = {}, {}
    for app in sorted((REPO / "functions").glob("*/app.py")):
        _sample(str(app), full=True)  # warm the OS page cache and .pyc files: we measure imports, not disk
        handlers[app.parent.name] = median_ms([_sample(str(app)) for _ in range(SAMPLES)])
        first_request[app.parent.name] = median_ms([_sample(str(app), full=True) for _ in range(SAMPLES)])
    result = {
        "benchmark": "cold_import",
        "samples_per_module": SAMPLES,
        "baseline_empty_ms": baseline,
        "handlers_ms": handlers,
        "target_ms": 150,
        "within_target": {name: ms <= 150 for name, ms in handlers.items()},
        "with_first_request_imports_ms": first_request,
        "note": (
            "handlers_ms: importing the handler module (app.py), what Lambda's init phase runs; heavy imports"
            " are deferred to where they are used. with_first_request_imports_ms adds what the first request"
            " imports as well (the function's routes module, pydantic settings): the rest of a cold start."
        ),
    }
    write_result("cold_import", result)
    return result
