"""The object classes of the BEV world, in label order (label i is CLASS_NAMES[i]).

Data, models and the metric all import these, so a label means the same thing everywhere.
"""

CLASS_NAMES: tuple[str, ...] = ("car", "pedestrian", "cyclist")
NUM_CLASSES: int = len(CLASS_NAMES)
LABEL_OF: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
