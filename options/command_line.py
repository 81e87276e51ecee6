"""The command line a run records (opt.txt, summaries, records): the words given, each flag once."""


def _action(parser, flag):
    """The parser's action for ``flag`` as typed, abbreviations included; None when it names none or several."""
    if flag in parser._option_string_actions:
        return parser._option_string_actions[flag]
    matches = {action for option, action in parser._option_string_actions.items() if option.startswith(flag)}
    return matches.pop() if parser.allow_abbrev and flag.startswith('--') and len(matches) == 1 else None


def effective_argv(parser, argv):
    """``argv`` with each flag once, where it was given last and with its last value, the one argparse
    took (a launcher's flags before the user's: ``--name cltnet ... --name uxrun`` keeps ``--name uxrun``
    at its place). Words that name no flag are kept as they are."""
    groups = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        action = _action(parser, word.split('=', 1)[0]) if word.startswith('-') else None
        if action is None:
            key, length = i, 1
        else:
            key, length = action.dest, 1 if '=' in word or action.nargs == 0 else 2
        groups.pop(key, None)
        groups[key] = argv[i:i + length]
        i += length
    return [word for group in groups.values() for word in group]
