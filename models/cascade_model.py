"""The released two-stage model: a CLTNet A->B generator and the stage-2 U-Net trained on its pseudo-masks.

Test-time only (tools/export_weights.py --generator builds it from a stage-2 run and a stage-1 weights
file). ``infer`` returns every map of both stages, so test.py's val search chooses between the
generator's maps (attention, difference, fused, cam) and the U-Net's (seg) like any other map mode.
"""
import argparse

from .base_model import BaseModel
from .cltnet_model import CLTNetModel
from .seg_model import SegModel


class CascadeModel(BaseModel):
    model_names = ['G_AB', 'seg']
    inference_nets = ['G_AB', 'seg']
    map_modes = CLTNetModel.map_modes + SegModel.map_modes

    def __init__(self, opt):
        if opt.is_train:
            raise SystemExit('error: --model cascade is built by tools/export_weights.py --generator, not trained; '
                             'train stage 1 (--model cltnet) and stage 2 (--stage 2) instead')
        super().__init__(opt)
        stage1 = CLTNetModel(opt)
        stage2 = SegModel(argparse.Namespace(**dict(vars(opt), ch=opt.seg_ch)))
        self.G_AB, self.seg = stage1.G_AB, stage2.seg
        self.stages = (stage1, stage2)

    def architecture(self):
        return dict(self.stages[0].architecture(), model='cascade', seg_ch=self.opt.seg_ch)

    @staticmethod
    def stage_state(state, map_mode):
        """The weights-file ``state`` of the one stage whose maps include ``map_mode`` (its networks,
        architecture and training options alone), so serving that map does not run the other stage; the
        image-level score is then that stage's own, and its options say which images it trained on."""
        architecture = dict(state['architecture'])
        seg_ch = architecture.pop('seg_ch')
        if map_mode in SegModel.map_modes:
            architecture = dict(model='seg', img_size=architecture['img_size'], img_ch=architecture['img_ch'], ch=seg_ch)
            return dict(state, architecture=architecture, nets={'seg': state['nets']['seg']})
        return dict(state, architecture=dict(architecture, model='cltnet'), nets={'G_AB': state['nets']['G_AB']},
                    options=(state.get('stage1') or {}).get('options') or {})

    def infer(self, images):
        """Both stages' maps; the image-level score is the generator's CAM classifier."""
        first, second = (stage.infer(images) for stage in self.stages)
        return dict(first, maps={**first['maps'], **second['maps']})
