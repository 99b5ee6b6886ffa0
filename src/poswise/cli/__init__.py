"""The ``poswise`` command: compare schedules and update rules, train one model, reproduce
the paper.

::

    poswise compare   [--dataset NAME | --data FILE] [--optimizers gd,pwo]
                      [--update sgd,adam,...] [options]
    poswise train     [--dataset NAME | --data FILE] [--optimizer gd|pwo|...]
                      [--update RULE] [--save model.npz] [options]
    poswise reproduce {cat,mnist,cifar10} [options]

Every option left out takes a default chosen per dataset (:data:`parser.PRESETS` and
:data:`parser.REPRODUCE`), so that ``poswise compare`` alone is a complete run of a few
seconds. Modules: :mod:`.parser` (options and presets), :mod:`.compare`, :mod:`.train`,
:mod:`.reproduce` (the commands), :mod:`._common` (errors, signals, files, data).

Exit codes: 0 success; 1 a data, model or output file is missing or unusable (the
message is printed, no traceback); 2 bad arguments; 130 stopped by Ctrl-C, 143 by
SIGTERM (what was finished is saved first). ``POSWISE_DEBUG=1`` gives tracebacks.
"""
import sys

from ._common import (EXIT_DATA, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, Fail,
                      Signals, eprint)
from .parser import PRESETS, REPRODUCE, build_parser

__all__ = ["main", "build_parser", "PRESETS", "REPRODUCE", "EXIT_DATA", "EXIT_USAGE",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED"]


def _commands():
    from .compare import cmd_compare
    from .reproduce import cmd_reproduce
    from .train import cmd_train
    return {"compare": cmd_compare, "train": cmd_train, "reproduce": cmd_reproduce}


def _check_launch(args):
    """Under mpirun/srun, only ``train --mpi`` runs: K uncoordinated copies of any other
    command would overwrite each other's files."""
    from ..distributed import MPILaunchError, check_launch
    try:
        check_launch(getattr(args, "mpi", False), command=f"poswise {args.command}")
    except MPILaunchError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def main(argv=None):
    """Run the ``poswise`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0, 1 (data/file error), 2 (bad arguments), 130 (Ctrl-C) or 143
        (SIGTERM). argparse itself exits with 2 (and ``--help`` with 0) through
        ``SystemExit``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "poswise " + " ".join(sys.argv[1:] if argv is None else argv)
    import warnings
    from ..trainers import DivergenceWarning
    with Signals() as signals:
        try:
            _check_launch(args)
            with warnings.catch_warnings():
                # Divergence is reported in the results; the warning would only repeat it.
                warnings.simplefilter("ignore", DivergenceWarning)
                return _commands()[args.command](args, command, signals)
        except Fail as exc:
            if exc.code == EXIT_USAGE:
                try:
                    parser.subcommands[args.command].print_usage(sys.stderr)
                except BrokenPipeError:
                    pass
            eprint(f"poswise {args.command}: error: {exc}")
            return exc.code
        except KeyboardInterrupt:
            eprint("Interrupted.")
            return signals.interrupted_code()
        except BrokenPipeError:
            from ._common import _silence
            _silence(sys.stdout)
            return 0
