"""Step 3: symmetric InfoNCE (CLIP's loss) between student and teacher embeddings."""

import torch
import torch.nn.functional as F
from torch import nn


class MyContrastiveLoss(nn.Module):
    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_feat, teacher_feat):
        s = F.normalize(student_feat, dim=1)  # divides by max(norm, eps): no NaN for zeros
        t = F.normalize(teacher_feat, dim=1)
        logits = s @ t.T / self.temperature  # [B, B] cosine similarities, sharpened
        labels = torch.arange(logits.shape[0], device=logits.device)  # positives: the diagonal
        student_picks = F.cross_entropy(logits, labels)  # each student finds its teacher
        teacher_picks = F.cross_entropy(logits.T, labels)  # each teacher finds its student
        return (student_picks + teacher_picks) / 2
