"""`python -m tftransfer.tuning <spec.json>`: runs one isolated trial and exits."""

import sys

from tftransfer.tuning.trial_process import _run_one_isolated_trial

if __name__ == "__main__":
    _run_one_isolated_trial(sys.argv[1])
