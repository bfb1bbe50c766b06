"""The scene generator's knobs (:class:`SceneConfig`), below every module that reads them, and the
config-dict parsing shared by the settings dataclasses of the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .worlds import WORLD_VERSION, recipes_of_world


def settings_from_dict(cls: type, cfg: dict, what: str) -> dict:
    """Keyword arguments for the settings dataclass ``cls`` from a config dict.

    Unknown keys raise (naming the valid ones); lists become tuples, since mmengine configs
    turn tuples into lists.
    """
    valid = {f.name for f in fields(cls)}
    unknown = set(cfg) - valid
    if unknown:
        raise KeyError(
            f"unknown {what} setting(s) {sorted(unknown)}; valid settings are {sorted(valid)}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator; defaults give a busy town street."""

    sensor_height: float = 1.84  # nuScenes LIDAR_TOP above the road
    extent: float = 62.0  # labelled objects lie within |x| <= extent along the road
    cross_street_prob: float = 0.4
    max_road_angle: float = 0.15  # radians; the road is turned by up to this
    max_ground_slope: float = 0.015
    traffic_gap: tuple[float, float] = (8.0, 40.0)  # mean free gap between moving cars
    parking_occupancy: tuple[float, float] = (0.2, 0.8)
    pedestrians: tuple[int, int] = (2, 16)
    cyclists: tuple[int, int] = (0, 4)
    clutter: bool = True  # False: only road, sidewalks and labelled objects
    world_version: int = WORLD_VERSION  # 1: symmetric objects (older models), 2: front and back

    def __post_init__(self):
        recipes_of_world(self.world_version)  # raises, naming the versions, if unknown
        for name in ("traffic_gap", "parking_occupancy", "pedestrians", "cyclists"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, "
                                 f"got {(lo, hi)}")
        if self.sensor_height <= 0 or self.extent <= 0:
            raise ValueError("sensor_height and extent must be > 0")

    @classmethod
    def from_dict(cls, cfg: dict | SceneConfig | None) -> SceneConfig:
        """Build from a (possibly partial) dict, as mmengine configs pass it."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        return cls(**settings_from_dict(cls, cfg, "scene"))
