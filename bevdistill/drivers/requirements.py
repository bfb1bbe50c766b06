"""What the mmdet3d driver needs installed, checked without importing it (the CLI tells an
mmdet3d config apart and says how to install them, on a machine without mmdet3d)."""

from __future__ import annotations

INSTALL_HINT = (
    "bevdistill.mmdet3d needs mmcv 2.1.0 (with ops), mmdet 3.2 and mmdet3d 1.4.0. Install them "
    "with `make mmdet3d` from the bevdistill repository (it builds and caches the mmcv wheel); "
    "see the book's set-up page for a CUDA build."
)


def require_mmdet3d() -> None:
    """Import mmdet3d's models, or raise ImportError saying how to install them."""
    try:
        import mmcv.ops  # noqa: F401  compiled ops: a pure-python mmcv cannot run mmdet3d models
        import mmdet3d.models  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} (import failed: {exc})") from exc
