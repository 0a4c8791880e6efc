#!/usr/bin/env bash
# The prepared GPU check (issue 18, part 6): benchmarks/gpu_check.py under a hard time limit.
#
#   benchmarks/gpu_check.sh                        # on one CUDA GPU: the whole check, under 8 minutes
#   benchmarks/gpu_check.sh --device cpu --smoke   # everything tiny on the CPU (tests/unit/test_gpu_check.py)
#
# Prints the check's JSON (its last line); gpu_check.json and one log per step go to $OUT (or --out).
# Python: $PYTHON, else the checkout's .venv, else python3 (a GPU machine's own torch), with the
# checkout's src/ on PYTHONPATH so nnlab need not be installed there. If the Python process dies or
# overruns GPU_CHECK_TIMEOUT (470 s), a JSON line still says so, with the steps it had finished.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ] && "$root/.venv/bin/python" -c 'import torch' 2>/dev/null; then
        python=$root/.venv/bin/python
    else
        python=python3
    fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
out=${OUT:-$(mktemp -d /tmp/gpu-check-out.XXXXXX)}
mkdir -p "$out"
timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-470}" "$python" "$root/benchmarks/gpu_check.py" --out "$out" "$@"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$rc" -ne 2 ]; then
    # 124: timeout stopped it; others: a crash. The steps it finished are in gpu_check.json.
    "$python" - "$out/gpu_check.json" "$rc" <<'PY' || echo "{\"crashed\": true, \"exit_code\": $rc}"
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    partial = json.load(open(path))
except (OSError, ValueError):
    partial = None
print(json.dumps({"crashed": True, "exit_code": rc, "timed_out": rc in (124, 137), "partial": partial}))
PY
fi
exit "$rc"
