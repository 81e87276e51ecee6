"""start_train.sh's stage 2 (``bash start_train.sh ISIC 2``) as steps of the step runner (workflow/step_runner.py):
stage 1 continued (train.py --resume True keeps a finished run), test.py, crf.py and pseudo.py on it, then the
stage-2 U-Net on its pseudo-masks.

    python -m workflow.stage2_chain RUN_WORDS... -- STAGE1_WORDS... -- STAGE2_WORDS...

RUN_WORDS are the flags of test.py, crf.py and pseudo.py (--dataset, --dataroot, --name of the stage-1 run),
STAGE1_WORDS those of the stage-1 train.py, STAGE2_WORDS those of the stage-2 train.py. The steps are recorded
in <stage-1 run>/stage2_chain.json: the same command again skips the steps that are up to date (same flags,
same inputs, outputs as they left them) and reruns a step whose flags or inputs changed and every step after it.
"""
import argparse
import sys

from options.base_options import default_folder
from records.pipeline_record import PipelineRecord
from records.run_folder import (checkpoints_folder, crf_record_path, pseudo_folder, run_folder, stage2_chain_path,
                                stage_folder, test_record_path)
from workflow.run_script import run_script
from workflow.step_runner import Step, StepRunner, stops_cleanly

def named_run(words):
    """The run folder the flags ``words`` name (their --result_dir, --dataset, --folder and --name, the last of
    each as argparse keeps it; the scripts' defaults otherwise)."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag, default in (('--result_dir', 'results'), ('--dataset', 'demo'), ('--folder', None), ('--name', None)):
        parser.add_argument(flag, default=default)
    where = parser.parse_known_args(words)[0]
    return run_folder(where.result_dir, where.dataset, where.folder or default_folder(where.dataset), where.name)


def chain_steps(run_words, stage1_words, stage2_words):
    """The five steps, in order."""
    run, stage2 = named_run(run_words), named_run(stage2_words)
    checkpoints, tested, refined = checkpoints_folder(run), stage_folder(run, 'test'), stage_folder(run, 'crf')
    return [Step('stage1', ['train.py', *stage1_words], inputs=[], outputs=[checkpoints]),
            Step('test', ['test.py', *run_words], inputs=[checkpoints], outputs=[tested]),
            Step('crf', ['crf.py', *run_words], inputs=[tested], outputs=[refined]),
            Step('pseudo', ['pseudo.py', *run_words], inputs=[checkpoints, test_record_path(run), crf_record_path(run)],
                 outputs=[pseudo_folder(run)]),
            Step('stage2', ['train.py', *stage2_words], inputs=[pseudo_folder(run)],
                 outputs=[checkpoints_folder(stage2)])]


def split_words(argv):
    """RUN_WORDS, STAGE1_WORDS, STAGE2_WORDS of the command line (two '--' between them)."""
    if argv.count('--') != 2:
        raise SystemExit('usage: python -m workflow.stage2_chain RUN_WORDS... -- STAGE1_WORDS... -- STAGE2_WORDS...')
    first = argv.index('--')
    second = argv.index('--', first + 1)
    return argv[:first], argv[first + 1:second], argv[second + 1:]


def main(argv=None):
    run_words, stage1_words, stage2_words = split_words(sys.argv[1:] if argv is None else list(argv))
    record = PipelineRecord(stage2_chain_path(named_run(run_words)))
    runner = StepRunner(record, run_script)
    with stops_cleanly('stage 2'):
        for step in chain_steps(run_words, stage1_words, stage2_words):
            runner.execute(step)


if __name__ == '__main__':
    main()
