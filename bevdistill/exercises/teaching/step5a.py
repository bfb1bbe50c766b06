"""Step 5a: response distillation of class heatmaps, one sigmoid per class and cell."""

import torch.nn.functional as F


def heatmap_kd(student_logits, teacher_logits):
    """Binary KL(teacher || student) per class and cell; summed over classes, mean over cells."""
    teacher_logits = teacher_logits.detach()  # the teacher is a fixed target
    p_t = teacher_logits.sigmoid()  # P(an object of class k is centred here), per class
    # KL = cross-entropy(teacher, student) - entropy(teacher); both are BCEs against p_t.
    cross_entropy = F.binary_cross_entropy_with_logits(student_logits, p_t, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, p_t, reduction="none")
    return (cross_entropy - entropy).sum(dim=1).mean()
