"""The released two-stage model: a CLTNet A->B generator and the stage-2 U-Net trained on its pseudo-masks.

Test-time only (python -m tools.export_weights --generator builds it from a stage-2 run and a stage-1 weights
file). ``infer`` returns every map of both stages, so test.py's val search chooses between the
generator's maps (attention, difference, fused, cam) and the U-Net's (seg) like any other map mode.

The stages may work at different sizes (``img_size`` of the generator, ``seg_img_size`` of the U-Net,
e.g. 128 and 256): the whole cascade then reads images at the larger size and hands the other stage a
downsized copy, so each stage sees the size it was trained at.
"""
import argparse

from data.weak_dataset import resize_square

from . import create_model, find_model_class
from .base_model import BaseModel
from .cltnet_model import CLTNetModel
from .seg_model import SegModel


# The localisation models stage 1 may be (their maps and image-level score come first in a cascade).
STAGE1_MODELS = ('cltnet', 'cam')
# What a cascade's architecture records beyond its stage-1 model's.
CASCADE_KEYS = ('seg_ch', 'seg_img_size', 'seg_encoder', 'stage1_model')


def cascade_architecture(stage1_architecture, seg_architecture):
    """The architecture of a cascade of that stage-1 model and the U-Net of ``seg_architecture``: the
    U-Net's channels, and only where they differ from the CLTNet, one-size, scratch-U-Net case (so files
    written before read as they were) its stage-1 model, its size and its encoder."""
    architecture = dict(stage1_architecture, model='cascade', seg_ch=seg_architecture['ch'])
    if stage1_architecture['model'] != 'cltnet':
        architecture['stage1_model'] = stage1_architecture['model']
    if seg_architecture['img_size'] != architecture['img_size']:
        architecture['seg_img_size'] = seg_architecture['img_size']
    if seg_architecture.get('encoder', 'scratch') != 'scratch':
        architecture['seg_encoder'] = seg_architecture['encoder']
    return architecture


def split_architecture(architecture):
    """A cascade's architecture -> (its stage-1 model's, its U-Net's)."""
    stage1 = dict(architecture)
    seg = dict(model='seg', ch=stage1.pop('seg_ch'), img_ch=stage1['img_ch'],
               img_size=stage1.pop('seg_img_size', None) or stage1['img_size'])
    if stage1.get('seg_encoder'):
        seg['encoder'] = stage1.pop('seg_encoder')
    stage1['model'] = stage1.pop('stage1_model', 'cltnet')
    return stage1, seg


class CascadeModel(BaseModel):
    """Both stages, test-time only. Its networks are the stage-1 model's served ones (CLTNet: G_AB; CAM:
    classifier) and 'seg'; the class attributes describe the CLTNet cascade, an instance its own."""

    model_names = ['G_AB', 'seg']
    inference_nets = ['G_AB', 'seg']
    map_modes = CLTNetModel.map_modes + SegModel.map_modes
    map_modes_help = "cltnet's and seg's"

    def __init__(self, opt):
        if opt.is_train:
            raise SystemExit('error: --model cascade is built by python -m tools.export_weights --generator, '
                             'not trained; train stage 1 (--model cltnet) and stage 2 (--stage 2) instead')
        stage1_class = find_model_class(getattr(opt, 'stage1_model', None) or 'cltnet')
        keys = (*stage1_class.architecture_keys, *stage1_class.optional_architecture, *CASCADE_KEYS)
        stage1_architecture, seg_architecture = split_architecture(
            {key: getattr(opt, key) for key in keys if getattr(opt, key, None) is not None})
        sizes = (stage1_architecture['img_size'], seg_architecture['img_size'])
        super().__init__(argparse.Namespace(**dict(vars(opt), img_size=max(sizes))))
        stage1 = create_model(argparse.Namespace(**dict(vars(opt), **stage1_architecture)))
        # opt.encoder is the stage-1 model's (a pretrained CAM); the U-Net's is seg_encoder, scratch when absent.
        stage2 = SegModel(argparse.Namespace(**{**vars(opt), 'encoder': 'scratch', **seg_architecture}))
        self.stages = (stage1, stage2)
        self.model_names = self.inference_nets = self.served_nets(self.architecture())
        for name in self.model_names:
            setattr(self, name, getattr(stage2 if name == 'seg' else stage1, name))
        self.map_modes = stage1.map_modes + SegModel.map_modes

    @classmethod
    def served_nets(cls, architecture):
        return [*find_model_class(architecture.get('stage1_model', 'cltnet')).served_nets(architecture), 'seg']

    def architecture(self):
        return cascade_architecture(self.stages[0].architecture(), self.stages[1].architecture())

    @staticmethod
    def stage_state(state, map_mode):
        """The weights-file ``state`` of the one stage whose maps include ``map_mode`` (its networks,
        architecture and training options alone), so serving that map does not run the other stage; the
        image-level score is then that stage's own, and its options say which images it trained on."""
        stage1, seg = split_architecture(state['architecture'])
        if map_mode in SegModel.map_modes:
            return dict(state, architecture=seg, nets={'seg': state['nets']['seg']})
        names = find_model_class(stage1['model']).served_nets(stage1)
        return dict(state, architecture=stage1, nets={name: state['nets'][name] for name in names},
                    options=(state.get('stage1') or {}).get('options') or {})

    def infer(self, images):
        """Both stages' maps (each at its stage's size); the image-level score is stage 1's (CLTNet: its
        generator's CAM classifier)."""
        # Each stage gets the batch resized as the datasets resize images (already that size: as it is).
        first, second = (stage.infer(images if images.shape[-1] == stage.opt.img_size
                                     else resize_square(images, stage.opt.img_size)) for stage in self.stages)
        return dict(first, maps={**first['maps'], **second['maps']})
