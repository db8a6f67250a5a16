"""What each trial records: its memory, and the log a trial process appends to.

A trial that runs in its own process (`isolate_trials=True`) writes its log
entry to `<cache_dir>/trial_log.jsonl`, which the searching process reads
back when the search ends.
"""

import json
import os

#: Set in a trial process's environment (`isolate_trials=True`).
_ISOLATED_ENV = "TFTRANSFER_ISOLATED_TRIAL"
_TRIAL_LOG = "trial_log.jsonl"


def rss_mb():
    """This process's resident memory in MB (Linux /proc, else psutil, else 0)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2 ** 20
        except ImportError:
            return 0.0


def _append_isolated_log(cache_dir, entry):
    """Appends `entry` to the trial log when this process runs isolated trials."""
    if cache_dir and os.environ.get(_ISOLATED_ENV):
        os.makedirs(cache_dir, exist_ok=True)
        with open(os.path.join(cache_dir, _TRIAL_LOG), "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def _read_isolated_log(cache_dir):
    """The entries trial processes appended to `cache_dir`'s trial log."""
    path = os.path.join(cache_dir, _TRIAL_LOG)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]
