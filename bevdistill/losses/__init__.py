"""Distillation losses: contrastive (step 3), attention transfer (step 4), response, combined (step 5)."""
