"""Which trained result ships: the self-training round a pipeline releases (pipeline.py) and the recipe to release
among finished pipelines (tools/choose_recipe.py). Both decide on the selection set's figures alone."""

ROUND_RULE = 'best val DI after the CRF'

# Half the spread of the released recipes' val DI over three seeds (0.0093 ISIC, 0.0095 BraTS): a smaller
# gain is within what a reseed alone moves.
DEFAULT_MARGIN = 0.005
# What a candidate that gives fewer held-out normals a lesion may lose in lesion DI (the false lesions on
# normal images are the other half of the quality targets).
DEFAULT_TOLERANCE = 0.01
# The share of held-out normals given a lesion that a candidate may show when the released recipe measured
# none (the quality target for normal images): a measured gate replaces an unmeasured one only at or below it.
DEFAULT_NORMALS_TARGET = 0.10


def best_round(ranking):
    """Index of the round in ``ranking`` ([{'val_DI_after_crf': DI, ...}] in round order) with the best val DI
    after the CRF, the earlier on a tie."""
    return max(range(len(ranking)), key=lambda i: (ranking[i]['val_DI_after_crf'], -i))


def _counted_share(scores, other):
    """(share, why) of ``scores``' held-out normals given a lesion as the rule counts it against ``other``:
    (None, why) when it does not count: it held none out, or ``other`` held out whole patients and it single
    images, which came from patients whose other images trained stage 2."""
    if scores['normals_with_lesion'] is None:
        return None, 'not measured'
    if other['normals_by'] and not scores['normals_by']:
        return None, 'normals are images of training patients'
    return scores['normals_with_lesion'], ''


def verdict(released, candidate, margin, tolerance, normals_target=DEFAULT_NORMALS_TARGET):
    """(passes, reason) of ``candidate`` against ``released`` (tools/choose_recipe.py's pipeline_scores
    dicts) under the rule."""
    (ours, ours_why), (theirs, theirs_why) = _counted_share(released, candidate), _counted_share(candidate, released)
    if theirs is None:
        # Not measured counts as higher: a candidate that holds no normal images out cannot show that it marks no
        # more of them (on lesion images alone, val may choose a rule, e.g. an Otsu threshold, that marks some
        # pixels of every image).
        if theirs_why != 'not measured':
            return False, ('normals with a lesion not measured on held-out patients (the recipe holds single '
                           'images out: hold_out_group)')
        return False, 'normals with a lesion not measured (the recipe holds no normal images out: hold_out_normals)'
    # The same the other way: a released recipe that cannot show its false lesions is held to the target.
    bound, bound_name = (ours, f'{ours:.2f}') if ours is not None else \
        (normals_target, f"{normals_target:.2f} (the target; the released recipe's {ours_why})")
    if theirs > bound:
        return False, f'normals with a lesion {theirs:.2f} > {bound_name}'
    needed = released['lesion_DI'] + margin
    if candidate['lesion_DI'] >= needed:
        return True, f"lesion DI {candidate['lesion_DI']:.4f} >= {needed:.4f}, normals with a lesion not higher"
    floor = released['lesion_DI'] - tolerance
    if (theirs < bound or ours is None) and candidate['lesion_DI'] >= floor:
        relation = '<' if theirs < bound else '<='
        return True, (f"normals with a lesion {theirs:.2f} {relation} {bound_name}, "
                      f"lesion DI {candidate['lesion_DI']:.4f} >= {floor:.4f}")
    return False, f"lesion DI {candidate['lesion_DI']:.4f} < {needed:.4f} needed"


def choose(released, candidates, margin=DEFAULT_MARGIN, tolerance=DEFAULT_TOLERANCE,
           normals_target=DEFAULT_NORMALS_TARGET):
    """The name to release and {candidate name: reason}: the passing candidate of highest lesion DI, else
    the released pipeline. Exit with one line when a candidate chose on other lesion images."""
    reasons, passing = {}, []
    for candidate in candidates:
        if candidate['lesion_images'] != released['lesion_images']:
            raise SystemExit(f"error: {candidate['name']} and {released['name']} were chosen on different lesion "
                             f"images ({len(candidate['lesion_images'])} vs {len(released['lesion_images'])}); "
                             'compare pipelines with the same select_few and data')
        passes, reasons[candidate['name']] = verdict(released, candidate, margin, tolerance, normals_target)
        if passes:
            passing.append(candidate)
    best = max(passing, key=lambda candidate: candidate['lesion_DI'], default=released)
    return best['name'], reasons
