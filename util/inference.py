"""Run a model over one evaluation split and collect lesion maps at the original image size."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data.labeled_dataset import LabeledDataset, collate_labeled
from util.postprocess import foreground_mask
from util.progress import progress_bar


def predict_split(model, pairs, opt, desc, keep_visuals=False):
    """Lesion maps for every (image, label) pair.

    Returns a list (one dict per image) with ``name``, ``path``, ``gt`` (bool H x W or None),
    ``maps`` (mode -> float32 H x W in [0, 1] at the original size, 0 outside the image
    foreground; plus ``attention-inverted``), ``score`` (image-level lesion probability, None when the
    model has none) and, with ``keep_visuals``, ``raw``, ``translated`` (uint8 at the network size) and
    ``heatmap`` (uint8), each only when the model's ``infer`` returns it.
    """
    # The network's own size and channels (stored with its weights), whatever the command line said.
    loader = DataLoader(LabeledDataset(pairs, model.opt.img_size, model.opt.img_ch), batch_size=opt.batch_size,
                        num_workers=opt.num_workers, collate_fn=collate_labeled,
                        pin_memory=opt.device.startswith('cuda'))
    results = []
    for batch in progress_bar(loader, desc=desc):
        out = model.infer(batch['image'])
        maps = {mode: values.float().cpu() for mode, values in out['maps'].items()}
        for i, name in enumerate(batch['name']):
            raw = batch['raw'][i].numpy()
            foreground = foreground_mask(raw)
            size = batch['orig_size'][i]
            score = float(out['score'][i]) if 'score' in out else None
            item = {'name': name, 'path': batch['path'][i], 'score': score,
                    'gt': batch['mask'][i].numpy() if batch['mask'][i].numel() else None,
                    'maps': {mode: _to_original(values[i], size) * foreground for mode, values in maps.items()}}
            if 'attention' in item['maps']:
                # The attention mask's polarity is not fixed by training (it may mark the
                # healthy part), so its inverse is offered to val selection too.
                item['maps']['attention-inverted'] = (1 - _to_original(maps['attention'][i], size)) * foreground
            if keep_visuals:
                item['raw'] = raw
                if 'translated' in out:
                    item['translated'] = _to_uint8_image((out['translated'][i].cpu() + 1) / 2)
                if 'heatmap' in out:
                    item['heatmap'] = _to_uint8_image(out['heatmap'][i].cpu()[None])
            results.append(item)
    return results


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
