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
    return walks(maps, affinity, beta, (steps,))[steps]


def walks(maps: torch.Tensor, affinity: torch.Tensor, beta: float, lengths) -> dict:
    """{t: ``maps`` walked t steps} for every t in ``lengths``, from one walk as long as the longest (how far
    to walk is a setting chosen on val, and every shorter walk comes free on the way)."""
    batch, classes, height, width = maps.shape
    if affinity.shape != (batch, height * width, height * width):
        raise ValueError(f'affinity of shape {tuple(affinity.shape)} does not match maps of shape '
                         f'{tuple(maps.shape)}: expected ({batch}, {height * width}, {height * width})')
    trans = transition_matrix(affinity, beta)
    scores = maps.reshape(batch, classes, height * width)
    walked = {0: scores} if 0 in lengths else {}
    for step in range(1, max(lengths) + 1):
        scores = torch.bmm(scores, trans)
        if step in lengths:
            walked[step] = scores
    return {step: values.reshape(batch, classes, height, width) for step, values in walked.items()}


# Shorter walks offered to val beside a method's own length (PSA's and IRN's 256 steps were set on larger maps:
# 56 x 56 and 128 x 128 positions against our 32 x 32 and 64 x 64, where as many steps spread further).
SHORT_WALKS = (4, 16, 64)


def walk_modes(method: str, steps: int) -> dict:
    """{map mode: walk length}: ``method`` walks its own ``steps``, METHOD-tT the SHORT_WALKS T (at most ``steps``).
    The modes do not depend on ``steps``, so a model class lists them as ``walk_modes(method, 1)``."""
    return {**{f'{method}-t{t}': min(t, steps) for t in SHORT_WALKS}, method: steps}


def scaled_to_peak(maps: torch.Tensor) -> torch.Tensor:
    """B x H x W walked scores -> divided by each image's maximum, in [0, 1] (the threshold chosen on val then
    decides lesion against background, as the constant background score of the papers did)."""
    maps = maps.clamp_min(0)
    return maps / maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
