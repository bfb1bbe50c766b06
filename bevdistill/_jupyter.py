"""Whether this process is a Jupyter kernel (bottom floor: imports nothing of the package)."""

from __future__ import annotations

import sys


def in_jupyter_kernel() -> bool:
    """True inside a running Jupyter kernel. A module that merely imported ``ipykernel`` (widget
    libraries do) is not a kernel: only an IPython shell with a kernel attached is."""
    ipython_module = sys.modules.get("IPython")
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return getattr(shell, "kernel", None) is not None
