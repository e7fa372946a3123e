"""Fidelity to the authors' pruning (manager.prune), checked against a plain-torch computation that does not use
the library's scoring: per filter, mean |w| over the kernel averaged over the filter's trainable incoming
connections, every layer scored on the weights and owners as they are before the pass, round(fraction*n) lowest
pruned (Python's round, ties to the lower index). Full-size layers (ResNet-18 and VGG-16 at width 1/2), random
weights. Tasks are numbered by their slot (their place in the order the network learned them)."""
import copy
import pytest
import torch
from fktnb.models import resnet18, vgg16

FRACTION = 0.65          # the paper's prune fraction


def hand_prune(net, fraction, layerwise=False):
    "{owner-source layer: set of pruned filter indices} for the current slot, computed from scratch."
    slot = net.current
    allowed = torch.tensor(sorted({slot} | set(net.shared(slot))))
    owners = {l: o.clone() for l, o in net.owner.items()}      # a private copy: the 'pre-pass' owners
    out = {}
    for l, m in net.layers.items():
        if net.owner_src[l] != l:                                # a shortcut follows its block's conv2
            continue
        w = m.weight.detach().double()
        per_conn = w.abs().reshape(w.shape[0], w.shape[1], -1).mean(2)               # [out, in]
        src = net.inp[l]
        cols = torch.ones(w.shape[1], dtype=torch.bool) if src is None else torch.isin(owners[src], allowed)
        score = per_conn[:, cols].sum(1) / max(int(cols.sum()), 1)
        mine = [j for j in range(w.shape[0]) if owners[l][j] == slot]
        n = round(fraction * len(mine))
        drop = sorted(mine, key=lambda j: (score[j].item(), j))[:n]
        out[l] = set(drop)
        if layerwise:                                            # the earlier behaviour: children see this layer's prune
            owners[l][drop] = 0
            for other, s in net.owner_src.items():
                if s == l: owners[other] = owners[l]
    return out


def perturbed(net, slot, seed):
    "Scale the rows of `slot` by random factors so the scores are not those of the initial values."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for l, m in net.layers.items():
            rows = net.owner[l] == slot
            f = torch.rand(m.weight.shape[:2], generator=g) * 2
            m.weight[rows] *= f.view(*f.shape, *[1] * (m.weight.dim() - 2))[rows]
    return net


def as_sets(pruned):
    return {l: set(v.tolist()) for l, v in pruned.items()}


@pytest.fixture(scope='module', params=['resnet18', 'vgg16'])
def three_tasks(request):
    "Slot 1 (all filters), slot 2 sharing 1, slot 3 sharing nothing: the prune results of both orders for each."
    build = dict(resnet18=resnet18, vgg16=vgg16)[request.param]
    net = build(width=1 / 2, seed=3)
    results = []
    for slot, share in ((1, ()), (2, {1}), (3, ())):
        net.add_task(5, share=share)
        perturbed(net, slot, seed=slot)
        hand = {o: hand_prune(net, FRACTION, layerwise=o == 'layerwise') for o in ('scored_before_pass', 'layerwise')}
        other = copy.deepcopy(net).prune(FRACTION, order='layerwise')
        pruned = net.prune(FRACTION)
        results.append(dict(slot=slot, hand=hand, lib={'scored_before_pass': as_sets(pruned), 'layerwise': as_sets(other)},
                            net=copy.deepcopy(net)))
        net.freeze()
    return request.param, results


def test_prune_matches_hand_computation(three_tasks):
    arch, results = three_tasks
    for r in results:
        hand, lib = r['hand']['scored_before_pass'], r['lib']['scored_before_pass']
        for l, drop in hand.items():
            assert lib.get(l, set()) == drop, (arch, r["slot"], l)
        net = r['net']
        for l, drop in hand.items():                              # the owners agree, shortcuts included
            assert all(net.owner[l][j] == 0 for j in drop)
            for other, s in net.owner_src.items():
                if s == l: assert net.owner[other] is net.owner[l]


def test_layerwise_option_matches_its_hand_computation_and_differs(three_tasks):
    arch, results = three_tasks
    differ = []
    for r in results:
        hand, lib = r['hand']['layerwise'], r['lib']['layerwise']
        for l, drop in hand.items():
            assert lib.get(l, set()) == drop, (arch, r["slot"], l)
        first = next(iter(hand))
        assert r['hand']['layerwise'][first] == r['hand']['scored_before_pass'][first]   # no parent: same decision
        differ += [(r["slot"], l) for l in hand if hand[l] != r['hand']['scored_before_pass'][l]]
    assert differ, f'{arch}: the two orders should differ on some layer'


def test_counts_are_pythons_round(three_tasks):
    "The library's counts: Python's round (halves to even) by default, half up on request; the prunes used them."
    from fktnb.subnets import n_pruned
    for n, even, up in ((10, 6, 7), (90, 58, 59), (30, 20, 20), (128, 83, 83), (1, 1, 1), (4, 3, 3)):
        assert (n_pruned(FRACTION, n), n_pruned(FRACTION, n, rounding='half_up')) == (even, up), n
    arch, results = three_tasks
    net = results[0]['net']
    for l, drop in results[0]['hand']['scored_before_pass'].items():
        assert len(drop) == n_pruned(FRACTION, net.layers[l].out_channels)