"""The released two-stage model: a CLTNet A->B generator and the stage-2 U-Net trained on its pseudo-masks.

Test-time only (tools/export_weights.py --generator builds it from a stage-2 run and a stage-1 weights
file). ``infer`` returns every map of both stages, so test.py's val search chooses between the
generator's maps (attention, difference, fused, cam) and the U-Net's (seg) like any other map mode.

The stages may work at different sizes (``img_size`` of the generator, ``seg_img_size`` of the U-Net,
e.g. 128 and 256): the whole cascade then reads images at the larger size and hands the other stage a
downsized copy, so each stage sees the size it was trained at.
"""
import argparse

from data.weak_dataset import resize_square

from .base_model import BaseModel
from .cltnet_model import CLTNetModel
from .seg_model import SegModel


def cascade_architecture(stage1_architecture, seg_architecture):
    """The architecture of a cascade of that generator and the U-Net of ``seg_architecture``: its
    channels, and its size and encoder only when they differ from the generator's size and the scratch
    U-Net (files of one size and of the scratch U-Net read as they were written before)."""
    architecture = dict(stage1_architecture, model='cascade', seg_ch=seg_architecture['ch'])
    if seg_architecture['img_size'] != architecture['img_size']:
        architecture['seg_img_size'] = seg_architecture['img_size']
    if seg_architecture.get('encoder', 'scratch') != 'scratch':
        architecture['seg_encoder'] = seg_architecture['encoder']
    return architecture


class CascadeModel(BaseModel):
    model_names = ['G_AB', 'seg']
    inference_nets = ['G_AB', 'seg']
    map_modes = CLTNetModel.map_modes + SegModel.map_modes

    def __init__(self, opt):
        if opt.is_train:
            raise SystemExit('error: --model cascade is built by tools/export_weights.py --generator, not trained; '
                             'train stage 1 (--model cltnet) and stage 2 (--stage 2) instead')
        # Files written before the U-Net could have its own size lack seg_img_size: both stages share one.
        sizes = (opt.img_size, getattr(opt, 'seg_img_size', None) or opt.img_size)
        super().__init__(argparse.Namespace(**dict(vars(opt), img_size=max(sizes), seg_img_size=sizes[1])))
        stage1 = CLTNetModel(argparse.Namespace(**dict(vars(opt), img_size=sizes[0])))
        stage2 = SegModel(argparse.Namespace(**dict(vars(opt), ch=opt.seg_ch, img_size=sizes[1],
                                                     encoder=getattr(opt, 'seg_encoder', None) or 'scratch')))
        self.G_AB, self.seg = stage1.G_AB, stage2.seg
        self.stages = (stage1, stage2)

    def architecture(self):
        return cascade_architecture(self.stages[0].architecture(), self.stages[1].architecture())

    @staticmethod
    def stage_state(state, map_mode):
        """The weights-file ``state`` of the one stage whose maps include ``map_mode`` (its networks,
        architecture and training options alone), so serving that map does not run the other stage; the
        image-level score is then that stage's own, and its options say which images it trained on."""
        architecture = dict(state['architecture'])
        seg_ch = architecture.pop('seg_ch')
        seg_img_size = architecture.pop('seg_img_size', None) or architecture['img_size']
        seg_encoder = architecture.pop('seg_encoder', None)
        if map_mode in SegModel.map_modes:
            architecture = dict(model='seg', img_size=seg_img_size, img_ch=architecture['img_ch'], ch=seg_ch,
                                **({'encoder': seg_encoder} if seg_encoder else {}))
            return dict(state, architecture=architecture, nets={'seg': state['nets']['seg']})
        return dict(state, architecture=dict(architecture, model='cltnet'), nets={'G_AB': state['nets']['G_AB']},
                    options=(state.get('stage1') or {}).get('options') or {})

    def infer(self, images):
        """Both stages' maps (each at its stage's size); the image-level score is the generator's CAM
        classifier."""
        # Each stage gets the batch resized as the datasets resize images (already that size: as it is).
        first, second = (stage.infer(images if images.shape[-1] == stage.opt.img_size
                                     else resize_square(images, stage.opt.img_size)) for stage in self.stages)
        return dict(first, maps={**first['maps'], **second['maps']})
