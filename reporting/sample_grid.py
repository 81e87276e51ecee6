"""Sample grids of training visuals: the tiles side by side (visdom names them in its caption) and, for the
PNGs in samples/, the same tiles under a band naming each column."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 2
LABEL_FONT_PX = 12
LABEL_BAND_PX = LABEL_FONT_PX + 8
LABEL_COLOUR = (34, 34, 34)


def _tiles(visuals):
    """First sample of each visual (Bx{1,3}xHxW tensors in [-1,1]) as uint8 HxWx3, PAD px white around."""
    tiles = []
    for tensor in visuals.values():
        img = tensor[0].detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().byte()
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        tiles.append(np.pad(img.permute(1, 2, 0).numpy(), ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=255))
    return tiles


def _side_by_side(tiles):
    """Tiles in a row, shorter ones padded white at the bottom."""
    height = max(tile.shape[0] for tile in tiles)
    return np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
                           for t in tiles], axis=1)


def image_grid(visuals):
    """The first sample of each visual side by side in dict order, 2 px white padding -> uint8 HxWx3."""
    return _side_by_side(_tiles(visuals))


def labelled_grid(visuals):
    """image_grid under a LABEL_BAND_PX band naming each column (the visual's name, as visdom's caption
    has them); a column narrower than its name is widened with white on both sides of its tile."""
    font = ImageFont.load_default(LABEL_FONT_PX)
    names, tiles = list(visuals), _tiles(visuals)
    widths = [max(tile.shape[1], math.ceil(font.getlength(name)) + 2 * PAD) for name, tile in zip(names, tiles)]
    tiles = [np.pad(tile, ((0, 0), ((w - tile.shape[1]) // 2, (w - tile.shape[1] + 1) // 2), (0, 0)),
                    constant_values=255) for tile, w in zip(tiles, widths)]
    grid = _side_by_side(tiles)
    canvas = Image.new('RGB', (grid.shape[1], grid.shape[0] + LABEL_BAND_PX), 'white')
    canvas.paste(Image.fromarray(grid), (0, LABEL_BAND_PX))
    draw = ImageDraw.Draw(canvas)
    for name, left, width in zip(names, np.cumsum([0] + widths[:-1]), widths):
        draw.text((left + width / 2, LABEL_BAND_PX / 2), name, fill=LABEL_COLOUR, font=font, anchor='mm')
    return np.asarray(canvas)
