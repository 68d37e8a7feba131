"""Run one benchmark case in this fresh interpreter: ``python -m bench.child module:function '<json>'``.

The case's result (a JSON object) is printed on the last line after ``@@BENCH``, with this
process's peak RSS added; the parent also reads the peak from ``wait4``.
"""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import RESULT_MARK, peak_rss_mb


def main() -> None:
    target, arguments = sys.argv[1], json.loads(sys.argv[2])
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = dict(function(**arguments))
    result.setdefault("peak_rss_mb_self", peak_rss_mb())
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
