"""The jobs: thin entrypoints (``python -m jobs.<name>``): parse -> run -> print.

Importing the package installs the process-wide redaction of what a job prints (runtime/redaction.py): every job
runs as ``python -m jobs.<name>``, so this is the one place that covers all of them.
"""

from unispeech_platform.runtime.redaction import install_redaction

install_redaction()
