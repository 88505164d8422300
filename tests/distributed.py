"""Run a test function in several CPU processes joined by a gloo process group, and collect what each returns.

Spawned processes find the function by loading its file by path: pytest's importlib mode gives test modules
names that a fresh interpreter could not import.
"""
import importlib.util
import inspect
import os
import socket
from typing import Any, Callable, List

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _load(path: str, name: str) -> Callable:
    spec = importlib.util.spec_from_file_location(f'spawned_{os.path.basename(path)[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _worker(rank: int, world_size: int, port: int, path: str, name: str, args: tuple, results: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS='1')
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        results[rank] = _load(path, name)(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, world_size: int, *args: Any) -> List[Any]:
    """``fn(rank, world_size, *args)`` in ``world_size`` spawned processes; returns their results by rank.

    ``fn`` must be a module-level function of a file; its arguments and results must be picklable.
    """
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world_size, free_port(), inspect.getfile(fn), fn.__name__, args, results),
                 nprocs=world_size, join=True)
        return [results[rank] for rank in range(world_size)]
