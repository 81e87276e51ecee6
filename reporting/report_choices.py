"""The report's "Choices made on val": what test.py and crf.py decided, as a short table, with the full
ranking and the CRF grid folded away.

The decisions are read from their records (<run>/test/selection.json, <run>/crf/selection.json, see
records/record_io.py); a run written before the records existed falls back on its summaries' copies.
"""
import math
import os

from records.record_io import file_sha256, read_record
from records.run_folder import crf_record_path, test_record_path, val_grid_path
from reporting.report_cells import fmt, header, name_cell, num_cell, read_json, text_row
from reporting.report_glossary import explain


def _record(path):
    """The record at ``path``, {} when it is missing or unreadable (the page must still render)."""
    try:
        return read_record(path)
    except (OSError, ValueError):
        return {}


def _recorded_or_summarised(record, summaries, stage):
    """The decision of ``stage``: its record's, else the first of its summaries'."""
    if isinstance(record.get('selection'), dict):
        return record['selection']
    return next((s['selection'] for st, _, s in summaries if st == stage and isinstance(s.get('selection'), dict)),
                {})


def _binarisation(rule):
    if rule.get('binarize') == 'otsu':
        return "Otsu's threshold, computed per image"
    if rule.get('binarize') == 'fixed' and rule.get('threshold') is not None:
        return f"fixed threshold {rule['threshold']:.4g} on the calibrated map"
    return fmt(rule.get('binarize'))


def _checkpoint(rule):
    step = f"step {rule['step']}" if rule.get('step') is not None else ''
    path = os.path.basename(str(rule['checkpoint'])) if rule.get('checkpoint') else ''
    return f'{step} ({path})' if step and path else step or path


def _crf_values(crf):
    return ', '.join(f'{k}={v:g}' if isinstance(v, (int, float)) else f'{k}={v}' for k, v in crf.items())


NOT_MEASURED = 'not measured: no val split'


def _val_di(crf_choice):
    before, after = crf_choice.get('val_DI_before'), crf_choice.get('val_DI_after')
    if before is None or after is None:
        return NOT_MEASURED
    return f'{fmt(before)} before the CRF, {fmt(after)} after'


def _gate(rule):
    """The gate's threshold with the mean DI it gave, or none and why."""
    choice = rule['gate_choice']
    if not rule.get('gate'):
        return 'none' + (f": {choice['reason']}" if 'reason' in choice else ': it did not raise the mean DI')
    return (f"{fmt(rule['gate']['threshold'])} (DI {fmt(choice['DI_without_gate'])} without, "
            f"{fmt(choice['DI_with_gate'])} with it)")


def _choice_rows(rule, crf_choice):
    """(choice, value, meaning) rows of the decisions present."""
    rows = []
    if rule:
        rows += [('lesion map', fmt(rule.get('map_mode')), "which of the model's maps becomes the mask"),
                 ('checkpoint', _checkpoint(rule), 'the weights whose maps scored best on val'),
                 ('threshold', _binarisation(rule), 'how the map becomes a mask'),
                 ('post-processing', fmt(rule.get('postprocess')), 'the clean-up applied to each mask'),
                 *([('image-level gate', _gate(rule), 'an empty mask for an image whose lesion score is below '
                                                      'this, chosen on val plus normal images held out of training')]
                   if 'gate_choice' in rule else []),
                 ('chosen on', fmt(rule.get('chosen_on')), 'the labelled images test.py chose on (never the '
                                                           'test splits); stored: the choices of --weights'),
                 ('val DI', fmt(rule.get('val_DI')) or NOT_MEASURED,
                  "mean Dice on val with these choices, test.py's masks")]
    if crf_choice:
        rows += [('CRF values', _crf_values(crf_choice.get('crf', {})),
                  "the dense CRF's parameters (sxy in pixels of a 256-px image; postprocess cleans its mask)"),
                 ('CRF chosen on', fmt(crf_choice.get('chosen_on')), 'val: searched on val; given: --crf_params; '
                                                                    'stored: those of --weights'),
                 ('val DI, CRF', _val_di(crf_choice), 'mean Dice on val before and after the CRF')]
    return rows


def _ranking(rule):
    """The folded table of every (checkpoint, map) candidate test.py ranked."""
    ranking = rule.get('ranking') or []
    if not ranking:
        return ''
    key, score = ('val_DI_sweep', 'val DI (sweep)') if 'val_DI_sweep' in ranking[0] else ('val_DI', 'val DI')
    body = ''.join(f"<tr>{num_cell(rank)}{num_cell(entry.get('step'))}{name_cell(entry.get('map_mode', ''))}"
                   f'{num_cell(entry.get(key))}</tr>' for rank, entry in enumerate(ranking, 1))
    columns = [('rank', 'num'), ('step', 'num'), ('map', 'text'), (score, 'num')]
    table = f'<table class="sortable">{header(columns, sorted_by="rank")}<tbody>{body}</tbody></table>'
    return (f'<details><summary>Full ranking on val: {len(ranking)} candidates (checkpoint × map)</summary>'
            + explain([score]) + table + '</details>')


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parameter_cell(value):
    return num_cell(value, f'{value:g}') if _is_number(value) else name_cell('' if value is None else value)


def _crf_grid(run_dir, crf_choice):
    """The folded table of every CRF combination crf.py scored on val (crf/val_grid.json); none when the
    values were given or stored (the file is then from an earlier search)."""
    if not str(crf_choice.get('chosen_on', '')).startswith('val'):
        return ''
    grid = read_json(val_grid_path(run_dir))
    if not isinstance(grid, dict) or not grid.get('grid'):
        return ''
    entries = sorted(grid['grid'], key=lambda e: -e['DI'] if _is_number(e.get('DI')) else math.inf)
    keys = [k for k in entries[0] if k != 'DI']
    body = ''.join('<tr>' + ''.join(_parameter_cell(e.get(k)) for k in keys) + num_cell(e.get('DI')) + '</tr>'
                   for e in entries)
    columns = [(k, 'num' if _is_number(entries[0].get(k)) else 'text') for k in keys] + [('val DI', 'num')]
    return (f'<details><summary>CRF grid on val: {len(entries)} combinations, best first</summary>'
            f'<table class="sortable">{header(columns)}<tbody>{body}</tbody></table></details>')


def _stale_crf_note(run_dir, record):
    """A warning when crf.py's record refines another decision of test.py than the one recorded now."""
    test_path = test_record_path(run_dir)
    recorded = record.get('test_record_sha256')
    if not recorded or not os.path.isfile(test_path) or recorded == file_sha256(test_path):
        return ''
    return ('<p class="warning">crf.py chose its values for an earlier decision of test.py than the one above: '
            'run crf.py again.</p>')


def choices_section(run_dir, summaries):
    """The "Choices made on val" section; '' when neither test.py nor crf.py has decided yet.

    summaries: [(stage, split, summary dict)], the fallback for runs without records.
    """
    crf_record = _record(crf_record_path(run_dir))
    rule = _recorded_or_summarised(_record(test_record_path(run_dir)), summaries, 'test')
    crf_choice = _recorded_or_summarised(crf_record, summaries, 'crf')
    rows = _choice_rows(rule, crf_choice)
    if not rows:
        return ''
    table = ('<table id="choices"><thead><tr><th class="name">choice</th><th class="name">value</th>'
             '<th class="name">what it is</th></tr></thead><tbody>'
             + ''.join(text_row(row) for row in rows) + '</tbody></table>')
    return ('<h2 id="selection">Choices made on val</h2><p>Made on the labelled val images alone and applied '
            'unchanged to every test split.</p>' + _stale_crf_note(run_dir, crf_record) + table
            + _ranking(rule) + _crf_grid(run_dir, crf_choice))
