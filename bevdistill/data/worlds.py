"""The synthetic world's versions: which object recipes the labelled classes are built from.

1: objects nearly front/back symmetric (the models shipped before version 2 were trained on it);
2: objects with a front and a back, so heading can be read from a scan.
"""

from __future__ import annotations

from . import parts, parts_v2

WORLD_VERSION = 2
WORLD_RECIPES = {1: parts.RECIPES, 2: parts_v2.RECIPES}


def recipes_of_world(version: int) -> dict:
    """The class -> recipe mapping of world ``version`` (see ``WORLD_RECIPES``)."""
    if version not in WORLD_RECIPES:
        raise ValueError(f"world_version must be one of {sorted(WORLD_RECIPES)} (1: the world "
                         f"of the models shipped before version 2), got {version!r}")
    return WORLD_RECIPES[version]
