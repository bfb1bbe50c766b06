"""The six camera images of a nuScenes sample, shaped like the synthetic rig's renders.

Each image is resized by ``width / 1600`` and its top rows cropped to ``height``, exactly as
:class:`~bevdistill.data.camera.CameraConfig` shapes the synthetic cameras, and its ``cam2img``
is scaled and shifted to match; ``lidar2cam`` and ``lidar2ego`` are expressed in the reader's
LiDAR frame (turned to x forward when ``align_forward``). So a model trained on the synthetic
world reads a real frame's images at the same scale, through the same calibration form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .camera import CAMERA_NAMES, NUSCENES_IMAGE_SIZE, CameraConfig
from .nuscenes import InfoFileError, NuScenesReader


def _image_path(reader: NuScenesReader, name: str, camera: str) -> Path:
    path = Path(name)
    candidates = [path] if path.is_absolute() else [
        root / sub / path for root in reader.roots for sub in ("", f"samples/{camera}", "samples")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{camera} image {name!r} not found; tried:\n  {tried}\n"
                            "Pass data_root= (the folder that holds samples/) to the reader")


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = np.eye(4)
    out[:2, :2] = ((c, -s), (s, c))
    return out


def load_cameras(reader: NuScenesReader, index: int,
                 config: CameraConfig | dict | bool | None = None) -> dict[str, np.ndarray]:
    """``imgs`` uint8 [6, 3, H, W] (RGB, the synthetic rig's camera order) and float32
    ``cam2img`` [6, 3, 3], ``lidar2cam`` / ``cam2ego`` [6, 4, 4], ``lidar2ego`` [4, 4]."""
    try:
        from PIL import Image
    except ImportError as exc:  # Pillow comes with matplotlib, which mmengine requires
        raise ImportError("reading camera images needs Pillow: pip install pillow") from exc
    cfg = CameraConfig.from_dict(config)
    info = reader.data_list[index]
    images = info.get("images") or {}
    missing = [c for c in CAMERA_NAMES if c not in images]
    if missing:
        raise InfoFileError(f"sample {info.get('sample_idx', index)} of {reader.info_path} has no "
                            f"images for {missing}: it needs the six cameras of a v1.1 info file")
    # points in the reader's frame = turn @ points in nuScenes' LiDAR frame
    turn = _rot_z(-reader._forward_yaw(index, info)) if reader.align_forward else np.eye(4)
    full = (cfg.width, cfg.full_height)
    crop = cfg.full_height - cfg.height
    imgs, cam2img, lidar2cam, cam2ego = [], [], [], []
    for camera in CAMERA_NAMES:
        cam = images[camera]
        with Image.open(_image_path(reader, cam["img_path"], camera)) as img:
            if img.size != NUSCENES_IMAGE_SIZE:
                raise ValueError(f"{camera} image is {img.size[0]} x {img.size[1]}, not nuScenes' "
                                 f"{NUSCENES_IMAGE_SIZE[0]} x {NUSCENES_IMAGE_SIZE[1]}")
            small = np.asarray(img.convert("RGB").resize(full, Image.BILINEAR))
        imgs.append(small[crop:].transpose(2, 0, 1))
        k = np.asarray(cam["cam2img"], dtype=np.float64)[:3, :3] * cfg.scale
        k[2, 2] = 1.0
        k[1, 2] -= crop
        cam2img.append(k)
        lidar2cam.append(np.asarray(cam["lidar2cam"], dtype=np.float64) @ np.linalg.inv(turn))
        cam2ego.append(np.asarray(cam["cam2ego"], dtype=np.float64))
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64) @ np.linalg.inv(turn)
    return {"imgs": np.ascontiguousarray(np.stack(imgs)),
            "cam2img": np.stack(cam2img).astype(np.float32),
            "lidar2cam": np.stack(lidar2cam).astype(np.float32),
            "cam2ego": np.stack(cam2ego).astype(np.float32),
            "lidar2ego": lidar2ego.astype(np.float32)}
