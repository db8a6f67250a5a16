"""A quiet start for the `tftransfer` command: TensorFlow's start-up lines hidden.

`import tensorflow` writes start-up lines from C++ straight to the process's
stderr (file descriptor 2): the absl "All log messages before
absl::InitializeLog()" notice, oneDNN's, the CUDA stub's and the CPU feature
guard's. In TensorFlow 2.21 `TF_CPP_MIN_LOG_LEVEL` hides only the last one, as
the others are logged through absl before TensorFlow reads the variable, so
the command also points file descriptor 2 at a temporary file while
TensorFlow loads. What was written there is replayed when the import fails.

`TF_ENABLE_ONEDNN_OPTS` is left as it is: it changes numerics, not logging.

This module imports nothing heavy: `tftransfer/__init__.py` runs it before it
imports TensorFlow, because every way into the command (the `tftransfer`
console script, `python -m tftransfer`) imports the package first.
"""

import os
import sys
import tempfile

# The level the command sets when the user has not: errors only.
QUIET_LOG_LEVEL = "3"


def invoked_as_command(argv=None, orig_argv=None):
    """Whether this process is the `tftransfer` command (console script or `-m`)."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.splitext(os.path.basename(str(argv[0])))[0] == "tftransfer":
        return True
    # `python [options] -m tftransfer ...`: while the package is imported, argv[0] is "-m".
    for index, item in enumerate(orig_argv[:-1]):
        if item == "-m":
            return orig_argv[index + 1] == "tftransfer"
    return False


def wants_quiet(argv=None, environ=None):
    """Whether to hide the start-up lines: no `--verbose`, and a TF log level above 0.

    A `TF_CPP_MIN_LOG_LEVEL` the user set is kept; 0 (show everything) keeps
    the lines too.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if "--verbose" in options:
        return False
    return environ.get("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL).strip() not in ("0", "")


def quiet_start():
    """For the command: sets `TF_CPP_MIN_LOG_LEVEL=3` unless set, and imports TensorFlow
    with its start-up lines hidden. Does nothing for library users or with `--verbose`."""
    if not invoked_as_command() or not wants_quiet():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL)
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf8", "replace"))
            sys.stderr.flush()
            raise
        os.dup2(saved, 2)
        os.close(saved)
