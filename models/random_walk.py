"""The random walk that PSA (Ahn and Kwak 2018) and IRN (Ahn, Cho and Kwak 2019) use to spread CAM scores.

Both predict an affinity between every two feature-map positions within a radius (PSA from feature
distances, IRN from the class boundaries between them) and propagate the class scores along them:
the affinities, raised to the power ``beta`` to sharpen them, become a transition matrix, and ``steps``
multiplications spread each score into the region its seeds belong to while a strong boundary (an
affinity near zero) stops it. The maps here are at feature resolution (a few thousand positions), so
the matrix is dense.
"""
import torch


def within_radius(height: int, width: int, radius: float, device=None) -> torch.Tensor:
    """Bool N x N (N = height * width): which positions lie within ``radius`` of each other (itself too)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                            indexing='ij')
    points = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    return torch.cdist(points, points) <= radius


def transition_matrix(affinity: torch.Tensor, beta: float) -> torch.Tensor:
    """B x N x N affinities in [0, 1] (zero outside the radius) -> B x N x N transitions whose column j
    weighs the positions that position j averages its new score over (PSA normalises columns: a map that
    is constant stays constant)."""
    powered = affinity.clamp(min=0) ** beta
    return powered / powered.sum(1, keepdim=True).clamp(min=1e-12)


def random_walk(maps: torch.Tensor, affinity: torch.Tensor, beta: float = 8.0, steps: int = 16) -> torch.Tensor:
    """Propagate B x K x H x W score maps along B x N x N affinities (N = H * W) for ``steps`` steps."""
    batch, classes, height, width = maps.shape
    if affinity.shape != (batch, height * width, height * width):
        raise ValueError(f'affinity of shape {tuple(affinity.shape)} does not match maps of shape '
                         f'{tuple(maps.shape)}: expected ({batch}, {height * width}, {height * width})')
    trans = transition_matrix(affinity, beta)
    scores = maps.reshape(batch, classes, height * width)
    for _ in range(steps):
        scores = torch.bmm(scores, trans)
    return scores.reshape(batch, classes, height, width)
