"""The weights README section of a file pipeline.py released, written from its records alone: the
command, the commit, every step's time and machine, the round the rule chose, and val + testA scores
before and after the CRF (testA scored once, by the pipeline's release steps)."""
import os
import shlex

from data.image_io import write_text_atomic

from evaluation.metrics import SCORE_NAMES
from records.record_io import read_record
from records.run_folder import crf_record_path, split_folder, summary_path, test_record_path


def score_rows(release_run, val_label='val'):
    """Markdown rows (a run's, or a pipeline's release run's): the selection set (named ``val_label``: val,
    with the few-shot images and held-out normals it holds) and testA before / after the CRF, testB's share
    of normal images given any lesion pixel."""
    rows = []
    for split in ('val', 'testA'):
        name = val_label if split == 'val' else split
        for stage, label in (('test', 'before CRF'), ('crf', 'after CRF')):
            summary = read_record(summary_path(split_folder(release_run, stage, split)))
            if summary:
                rows.append(f'| {name} | {label} | ' + ' | '.join(f'{summary[k]:.4f}' for k in SCORE_NAMES) + ' |')
            elif stage == 'crf' and split == 'val' and os.path.isfile(crf_record_path(release_run)):
                # crf.py scores val for its parameter search; without a crf/val folder only that DI exists.
                chosen = read_record(crf_record_path(release_run))['selection']
                rows.append(f"| {name} | after CRF | | {chosen['val_DI_after']:.4f} | | | |")
    normal = [(label, read_record(summary_path(split_folder(release_run, stage, 'testB'))))
              for stage, label in (('test', 'before CRF'), ('crf', 'after CRF'))]
    lines = [f'{label}: {summary["fp_rate"]:.2f}' for label, summary in normal if summary]
    return rows, ('testB, share of normal images given any lesion pixel: ' + ', '.join(lines) + '.') if lines else ''


def section(dataset, out, record, release_run, command):
    """The README section (between ``<!-- dataset start/end -->`` markers) of released file ``out``."""
    steps = record['steps']
    commits = sorted({step['commit'] for step in steps.values()})
    machines = sorted({step['machine'] for step in steps.values() if 'machine' in step})
    total = sum(step.get('seconds', 0) for step in steps.values())
    selection = read_record(test_record_path(release_run)).get('selection', {})
    crf = read_record(crf_record_path(release_run)).get('selection', {})
    chosen = record.get('choose', {})
    rows, normal = score_rows(release_run, selection.get('chosen_on', 'val'))
    lines = [f'<!-- {dataset} start -->', f'## {os.path.basename(out)}', '',
             f'Built by `python {command}` at commit{"s" if len(commits) > 1 else ""} '
             + ', '.join(f'`{c}`' for c in commits) + f' in {total / 60:.0f} min on '
             + '; '.join(machines) + '.', '',
             '| step | command | minutes |', '|---|---|---|',
             *[f"| {name} | `python {shlex.join(step['argv'])}` | {step.get('seconds', 0) / 60:.1f} |"
               for name, step in steps.items()], '']
    if chosen:
        lines += ['Stage-2 rounds by val DI after the CRF (the rule keeps the best): '
                  + ', '.join(f"{r['run']} {r['val_DI_after_crf']:.4f}" for r in chosen['ranking'])
                  + f"; released: {chosen['chosen']}.", '']
    lines += [f"Chosen on {selection.get('chosen_on', 'val')}: map `{selection.get('map_mode')}`, "
              f"{selection.get('binarize')} threshold {selection.get('threshold')}, post-processing "
              f"`{selection.get('postprocess')}`"
              + (f"; image-level gate {selection['gate']['threshold']:.4g}" if selection.get('gate') else '')
              + f"; CRF {crf.get('crf')}.", '',
              '| split | stage | JA | DI | AC | SE | SP |', '|---|---|---|---|---|---|---|', *rows, '']
    if normal:
        lines += [normal, '']
    lines += ['Written by pipeline.py from its record (`pipeline.json`) and the release steps\' summaries.',
              f'<!-- {dataset} end -->']
    return '\n'.join(lines)


def update_readme(path, dataset, out, record, release_run, command):
    """Replace (or append) the ``dataset`` section of the weights README at ``path``."""
    replace_section(path, dataset, section(dataset, out, record, release_run, command))


def check_readme(path):
    """The text of the Markdown file ``path`` that a section goes into ('# Released weights' for a new one);
    exit with one line when it is a folder or not UTF-8 text (a binary file given by mistake)."""
    if not os.path.exists(path):
        return '# Released weights\n'
    fix = 'pass a Markdown file such as weights/README.md (or a new file name)'
    if os.path.isdir(path):
        raise SystemExit(f'error: {path} is a folder, not a Markdown file; {fix}')
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise SystemExit(f'error: {path} is not UTF-8 text (byte {error.start}), so not a Markdown file; '
                         f'{fix}') from None


def replace_section(path, dataset, new):
    """Replace (or append) the text between ``<!-- dataset start -->`` and ``<!-- dataset end -->``."""
    text = check_readme(path)
    start, end = f'<!-- {dataset} start -->', f'<!-- {dataset} end -->'
    if start in text and end in text:
        text = text[:text.index(start)] + new + text[text.index(end) + len(end):]
    else:
        text = text.rstrip('\n') + '\n\n' + new + '\n'
    write_text_atomic(path, text)
