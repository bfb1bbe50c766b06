"""BEV detectors with BEVFusion's LiDAR-branch attribute names."""
