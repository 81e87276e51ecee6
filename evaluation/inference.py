"""Run a model over one evaluation split and collect lesion maps at the original image size."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data.labeled_dataset import LabeledDataset, collate_labeled
from evaluation.postprocess import foreground_mask
from util.progress import progress_bar


def predict_split(model, pairs, desc, *, batch_size, num_workers, device, keep_visuals=False):
    """Lesion maps for every (image, label) pair, read ``batch_size`` at a time by ``num_workers`` loader
    processes (0: this one), pinned for a CUDA ``device``; ``desc`` names the progress bar.

    Returns a list (one dict per image) with ``name``, ``path``, ``gt`` (bool H x W or None) and what
    ``predict_batch`` gives (``maps`` of every mode, ``score``, with ``keep_visuals`` the visuals).
    """
    # The network's own size and channels (stored with its weights), whatever the command line said.
    loader = DataLoader(LabeledDataset(pairs, model.opt.img_size, model.opt.img_ch), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_labeled, pin_memory=device.startswith('cuda'))
    results = []
    for batch in progress_bar(loader, desc=desc):
        items = predict_batch(model, batch['image'], [raw.numpy() for raw in batch['raw']], keep_visuals=keep_visuals)
        for item, name, path, mask in zip(items, batch['name'], batch['path'], batch['mask']):
            item.update(name=name, path=path, gt=mask.numpy() if mask.numel() else None)
            results.append(item)
    return results


def predict_batch(model, images, raws, modes=None, keep_visuals=False):
    """Lesion maps of one batch: ``images`` B x C x S x S network inputs (data.labeled_dataset.network_input)
    of the uint8 H x W x 3 arrays ``raws``.

    Returns one dict per image with ``maps`` (mode -> float32 H x W in [0, 1] at the raw image's size, 0
    outside its foreground; ``attention`` brings ``attention-inverted``; only ``modes`` when given, which
    spares the memory of the others at full resolution), ``score`` (image-level lesion probability, None
    when the model has none) and, with ``keep_visuals``, ``raw``, ``translated`` (uint8 at the network
    size) and ``heatmap`` (uint8), each only when the model's ``infer`` returns it.
    """
    out = model.infer(images)
    wanted = set(modes or available_map_modes(out['maps']))
    maps = {mode: values.float().cpu() for mode, values in out['maps'].items()
            if mode in wanted or (mode == 'attention' and 'attention-inverted' in wanted)}
    items = []
    for i, raw in enumerate(raws):
        foreground = foreground_mask(raw)
        size = raw.shape[:2]
        item = {'score': float(out['score'][i]) if 'score' in out else None,
                'maps': {mode: _to_original(values[i], size) * foreground for mode, values in maps.items()
                         if mode in wanted}}
        if 'attention-inverted' in wanted:
            # The attention mask's polarity is not fixed by training (it may mark the
            # healthy part), so its inverse is offered to val selection too.
            item['maps']['attention-inverted'] = (1 - _to_original(maps['attention'][i], size)) * foreground
        if keep_visuals:
            item['raw'] = raw
            if 'translated' in out:
                item['translated'] = _to_uint8_image((out['translated'][i].cpu() + 1) / 2)
            if 'heatmap' in out:
                item['heatmap'] = _to_uint8_image(out['heatmap'][i].cpu()[None])
        items.append(item)
    return items


def available_map_modes(model_modes):
    """The map modes predict_split returns for a model whose ``infer`` gives ``model_modes``."""
    modes = tuple(model_modes)
    return modes + (('attention-inverted',) if 'attention' in modes else ())


def _to_original(prob, size):
    """h x w map -> float32 numpy map at ``size`` (bilinear)."""
    resized = F.interpolate(prob[None, None], size=tuple(size), mode='bilinear', align_corners=False)
    return resized[0, 0].clamp(0, 1).numpy().astype(np.float32)


def _to_uint8_image(tensor):
    """C x H x W float in [0, 1] -> uint8 H x W x C (or H x W for one channel)."""
    array = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def stack_by_shape(items, mode):
    """Group maps and ground truths by image shape: {shape: (probs N x H x W, gts N x H x W)} tensors."""
    groups = {}
    for item in items:
        prob = item['maps'][mode]
        groups.setdefault(prob.shape, ([], []))
        groups[prob.shape][0].append(torch.from_numpy(prob))
        groups[prob.shape][1].append(torch.from_numpy(item['gt']))
    return {shape: (torch.stack(p), torch.stack(g)) for shape, (p, g) in groups.items()}
