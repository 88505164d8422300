"""The command-line options every entry point of ``tools/`` shares for mmengine's launchers."""
import argparse
import os

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launcher`` and the ``--local-rank`` that torch's launcher passes."""
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher (mmengine)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launcher_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; export ``LOCAL_RANK`` for mmengine when the launcher did not."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
