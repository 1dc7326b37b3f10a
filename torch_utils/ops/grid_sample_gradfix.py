"""Bilinear grid_sample (zeros padding, align_corners=False) that can be differentiated twice w.r.t. its input."""

import torch
import torch.nn.functional as F

# The training loop turns this on so that R1 can differentiate through the augmentation's geometric
# warp; when off, torch's own grid_sample runs.
enabled = False

# aten enum values for grid_sampler_2d: bilinear interpolation, zeros padding.
_BILINEAR = 0
_ZEROS = 0
_ALIGN_CORNERS = False


def grid_sample(input, grid):
    """Sample `input` [N, C, H, W] at normalised coordinates `grid` [N, H_out, W_out, 2] -> [N, C, H_out, W_out].

    Equivalent to F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros',
    align_corners=False). With `enabled`, second derivatives through `input` are supported on any
    device; second derivatives through `grid` are not.
    """
    if enabled:
        if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2:
            raise ValueError(f'grid_sample expects input [N, C, H, W] and grid [N, H, W, 2], got '
                             f'{tuple(input.shape)} and {tuple(grid.shape)}')
        return _GridSample.apply(input, grid)
    return F.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros', align_corners=False)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return torch.ops.aten.grid_sampler_2d(input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        wanted = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        grad_input, grad_grid = _GridSampleBackward.apply(grad_output, input, grid, wanted)
        return grad_input, grad_grid


class _GridSampleBackward(torch.autograd.Function):
    """First derivatives of grid sampling, differentiable once more w.r.t. the incoming gradient."""

    @staticmethod
    def forward(ctx, grad_output, input, grid, wanted):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(grid)
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS, list(wanted))
        # The kernels may fill outputs that were not asked for; hand back only the requested ones.
        return (grad_input if wanted[0] else None), (grad_grid if wanted[1] else None)

    @staticmethod
    def backward(ctx, grad_grad_input, grad_grad_grid):
        (grid,) = ctx.saved_tensors
        if grad_grad_grid is not None or ctx.needs_input_grad[2]:
            raise AssertionError('grid_sample_gradfix: second-order gradients w.r.t. the grid are not supported; '
                                 'detach the grid (augmentation grids need no gradient)')
        grad_grad_output = None
        if ctx.needs_input_grad[0] and grad_grad_input is not None:
            # grad_input is the adjoint of sampling applied to grad_output, so its derivative along
            # grad_grad_input is the sampling itself.
            grad_grad_output = _GridSample.apply(grad_grad_input, grid)
        # grad_input does not depend on the input values (sampling is linear), hence None for input.
        return grad_grad_output, None, None, None

