"""Test-wide settings: one torch thread per pytest worker (two workers share two cores)."""

import torch

torch.set_num_threads(1)
