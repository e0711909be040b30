"""Quiet TensorFlow's C++ start-up lines (oneDNN, CUDA, CPU features) on the command line.

On a machine without a GPU, importing TensorFlow prints lines such as ``cuInit ... UNKNOWN
ERROR`` or ``Could not find cuda drivers`` that report nothing wrong. Some are written
before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so the import itself runs with the
process's stderr set aside; whatever it printed is shown after all if the import fails.
The CLIs call :func:`quiet_tensorflow` unless given ``--tf-log``. TF-free until called.
"""

from __future__ import annotations

import os
import sys
import tempfile


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ log lines hidden (a no-op if it is already imported).

    A ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept, and then nothing is hidden.
    """
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # the lines TensorFlow logs after start-up
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


TF_LOG_HELP = "show TensorFlow's C++ start-up log lines (hidden by default)"
