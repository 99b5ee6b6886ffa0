"""``poswise reproduce {cat,mnist,cifar10}``: the paper's experiments (see
:data:`poswise.cli.parser.REPRODUCE` for the settings and why)."""
from .compare import run_compare
from .parser import REPRODUCE

__all__ = ["cmd_reproduce"]


def cmd_reproduce(args, command, signals):
    args.dataset, args.data, args.name = args.experiment, None, None
    return run_compare(args, args.experiment, REPRODUCE[args.experiment], command, signals)
