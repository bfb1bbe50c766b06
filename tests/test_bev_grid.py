"""Reading BEV maps at cells: an index gather equals bilinear sampling at the cell centres."""

import torch

from bevdistill.bev_grid import cell_centres, gather_cells, sample_cells


def test_gather_equals_sampling_at_the_cell_centres():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 9)
    index = torch.stack([torch.randperm(54)[:7], torch.randperm(54)[:7]])
    gathered = gather_cells(x, index)
    sampled = sample_cells(x, cell_centres(6, 9)[index])
    assert gathered.shape == (2, 7, 5)
    torch.testing.assert_close(gathered, sampled, rtol=0, atol=1e-5)
    # row-major: index k is cell (k // W, k % W)
    assert torch.equal(gathered[1, 0], x[1, :, index[1, 0] // 9, index[1, 0] % 9])


def test_gather_passes_gradients_to_the_read_cells_only():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    gather_cells(x, torch.tensor([[5]])).sum().backward()
    assert x.grad[0, :, 1, 1].eq(1).all() and x.grad.sum() == 3
