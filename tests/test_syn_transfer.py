"""The `syn` sequence does what it is for: sharing a subnetwork of the same family helps a new task more than
sharing one of the other family (issue 4). A small measured experiment: ResNet-18 at width 1/8 on CPU, 8 + 2 epochs,
deterministic with a fixed seed (about a minute on 2 cores)."""
import pytest
import torch
from fktnb.sequences import load_sequence
from fktnb.models import resnet18
from fktnb.train import learn_task, evaluate

FIT = dict(epochs=8, finetune_epochs=2, prune=0.65, lr=0.1, batch_size=64, seed=0, progress=False, device='cpu')


@pytest.fixture(scope='module')
def syn():
    return load_sequence('syn', syn_images=600)


def transfer_accuracy(seq, alpha, beta):
    "Test accuracy on task beta after training it with S_alpha shared (Algorithm 1)."
    net = resnet18(width=1 / 8, seed=0)
    learn_task(net, seq[alpha - 1].train, seq[alpha - 1].n_classes, **FIT)          # slot 1: task alpha
    slot, _ = learn_task(net, seq[beta - 1].train, seq[beta - 1].n_classes, share={1}, **FIT)
    return evaluate(net, slot, seq[beta - 1].test)


@pytest.mark.parametrize('beta, same, other', [(3, 1, 2), (5, 3, 4), (4, 2, 1)])
def test_sharing_within_a_family_beats_sharing_across(syn, beta, same, other):
    assert syn[same - 1].family == syn[beta - 1].family != syn[other - 1].family
    within, across = transfer_accuracy(syn, same, beta), transfer_accuracy(syn, other, beta)
    print(f'beta={beta}: share S_{same} (same family) {within:.3f}, share S_{other} (other family) {across:.3f}')
    assert within > across
