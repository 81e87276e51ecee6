"""Which trained result ships: the self-training round a pipeline releases (pipeline.py) and the recipe to release
among finished pipelines (tools/choose_recipe.py). Both decide on the selection set's figures alone."""

ROUND_RULE = 'best val DI after the CRF'

# Half the spread of the released recipes' val DI over three seeds (0.0093 ISIC, 0.0095 BraTS): a smaller
# gain is within what a reseed alone moves.
DEFAULT_MARGIN = 0.005
# What a candidate that gives fewer held-out normals a lesion may lose in lesion DI (the false lesions on
# normal images are the other half of the quality targets).
DEFAULT_TOLERANCE = 0.01


def best_round(ranking):
    """Index of the round in ``ranking`` ([{'val_DI_after_crf': DI, ...}] in round order) with the best val DI
    after the CRF, the earlier on a tie."""
    return max(range(len(ranking)), key=lambda i: (ranking[i]['val_DI_after_crf'], -i))


def verdict(released, candidate, margin, tolerance):
    """(passes, reason) of ``candidate`` against ``released`` (tools/choose_recipe.py's pipeline_scores
    dicts) under the rule."""
    ours, theirs = released['normals_with_lesion'], candidate['normals_with_lesion']
    # Not measured counts as higher: a candidate that holds no normal images out cannot show that it marks no
    # more of them (on lesion images alone, val may choose a rule, e.g. an Otsu threshold, that marks some
    # pixels of every image).
    higher = theirs is None or (ours is not None and theirs > ours)
    needed = released['lesion_DI'] + margin
    if candidate['lesion_DI'] >= needed and not higher:
        return True, f"lesion DI {candidate['lesion_DI']:.4f} >= {needed:.4f}, normals with a lesion not higher"
    floor = released['lesion_DI'] - tolerance
    if ours is not None and theirs is not None and theirs < ours and candidate['lesion_DI'] >= floor:
        return True, (f"normals with a lesion {theirs:.2f} < {ours:.2f}, "
                      f"lesion DI {candidate['lesion_DI']:.4f} >= {floor:.4f}")
    if theirs is None:
        return False, 'normals with a lesion not measured (the recipe holds no normal images out: hold_out_normals)'
    if higher:
        return False, f'normals with a lesion {theirs:.2f} > {ours:.2f}'
    return False, f"lesion DI {candidate['lesion_DI']:.4f} < {needed:.4f} needed"


def choose(released, candidates, margin=DEFAULT_MARGIN, tolerance=DEFAULT_TOLERANCE):
    """The name to release and {candidate name: reason}: the passing candidate of highest lesion DI, else
    the released pipeline. Exit with one line when a candidate chose on other lesion images."""
    reasons, passing = {}, []
    for candidate in candidates:
        if candidate['lesion_images'] != released['lesion_images']:
            raise SystemExit(f"error: {candidate['name']} and {released['name']} were chosen on different lesion "
                             f"images ({len(candidate['lesion_images'])} vs {len(released['lesion_images'])}); "
                             'compare pipelines with the same select_few and data')
        passes, reasons[candidate['name']] = verdict(released, candidate, margin, tolerance)
        if passes:
            passing.append(candidate)
    best = max(passing, key=lambda candidate: candidate['lesion_DI'], default=released)
    return best['name'], reasons
