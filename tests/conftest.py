"""Shared pytest fixtures: the repository root and the optional real datasets beside the clone."""
import os
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))


def shared_data_dir():
    "The folder with the real MNIST / Fashion-MNIST raw files, or None (a user's clone has none)."
    env = os.environ.get('FKTNB_SHARED_DATA')
    if env and (Path(env) / 'MNIST' / 'raw').is_dir(): return Path(env)
    return None


@pytest.fixture
def shared_data():
    path = shared_data_dir()
    if path is None:
        pytest.skip('real MNIST files not found: set FKTNB_SHARED_DATA to a folder holding MNIST/raw')
    return path
