"""The three search strategies, written against :class:`~pyaccel_nas.econas.search.SearchRun`.

All three train children on the same proxy and pay for training the same way, so their results compare
at equal cost:

- ``hierarchical``: the EcoNAS hierarchical proxy strategy. Networks live in tiers trained E, 2E and 3E
  epochs (3E = the proxy's epochs, one cosine schedule). Each cycle, parents are picked by tournament from
  every tier, their mutated children are trained E epochs; the best of the E tier and of the 2E tier are
  promoted by training E more epochs from their checkpoints; networks untrained for ``age`` cycles die.
- ``evolution``: regularized (aging) evolution on the full proxy (the AmoebaNet baseline): tournament
  parents, children trained all the proxy's epochs, the oldest network leaves the population per child.
- ``random``: random genotypes trained all the proxy's epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyaccel_nas.econas.search import Candidate, SearchRun


class NoNetworkLeft(Exception):
    """Every network of the population failed: there is no parent to choose."""


def _tournament(run: SearchRun, pool: list[Candidate]) -> Candidate:
    """The most accurate of ``tournament`` networks drawn from ``pool`` (ties: the older network)."""
    if not pool:
        raise NoNetworkLeft
    sample = run.rng.sample(pool, min(run.config.tournament, len(pool)))
    return max(sample, key=lambda c: (c.val_accuracy, -c.network_id))


def _top(pool: list[Candidate], count: int) -> list[Candidate]:
    return sorted(pool, key=lambda c: (-c.val_accuracy, c.network_id))[:count]


def _initial_population(run: SearchRun, epochs: int) -> list[Candidate]:
    """``initial`` random networks trained ``epochs`` epochs: cycle 0 of every strategy."""
    population = [run.new_network(run.random_genotype()) for _ in range(run.config.initial)]
    run.train([(c, epochs) for c in population])
    run.end_cycle()
    return population


def hierarchical(run: SearchRun) -> None:
    config, stage = run.config, run.proxy.epochs // 3
    if stage < 1 or run.proxy.epochs % 3:
        raise ValueError(f"hierarchical: the proxy's epochs must be 3E (a multiple of 3), got {run.proxy}")
    _initial_population(run, stage)
    for _ in run.cycles():
        alive = [c for c in run.networks if c.alive]
        tiers = [[c for c in alive if c.epochs == k * stage] for k in (1, 2, 3)]
        children = []
        for tier, count in zip(tiers, config.children):
            for _ in range(count):
                parent = _tournament(run, tier or alive)  # an empty tier lends its turn to the whole population
                children.append(run.new_network(run.mutate(parent.genotype)))
        run.train([(c, stage) for c in children])
        # promote the 2E tier first, so a network moves up at most one tier per cycle
        tier1 = [c for c in alive + children if c.epochs == stage]
        promotions = [(c, 3 * stage) for c in _top(tiers[1], config.promote[1])]
        promotions += [(c, 2 * stage) for c in _top(tier1, config.promote[0])]
        run.train(promotions)
        for c in run.networks:
            if c.alive and run.cycle - c.last_trained_cycle >= config.age:
                run.retire(c)


def evolution(run: SearchRun) -> None:
    config, epochs = run.config, run.proxy.epochs
    population = _initial_population(run, epochs)
    for _ in run.cycles():
        children = [
            run.new_network(run.mutate(_tournament(run, [c for c in population if c.alive]).genotype))
            for _ in range(sum(config.children))
        ]
        run.train([(c, epochs) for c in children])
        for child in children:  # aging: the oldest leaves, whatever its accuracy
            run.retire(population.pop(0))
            population.append(child)


def random_search(run: SearchRun) -> None:
    config, epochs = run.config, run.proxy.epochs
    _initial_population(run, epochs)
    for _ in run.cycles():
        batch = [run.new_network(run.random_genotype()) for _ in range(sum(config.children))]
        run.train([(c, epochs) for c in batch])


STRATEGIES = {"hierarchical": hierarchical, "evolution": evolution, "random": random_search}


def planned_training(strategy: str, config, proxy_epochs: int) -> tuple[int, int]:
    """The most a strategy trains in ``config.cycles`` cycles: (networks, network-epochs). Hierarchical
    searches train fewer when a tier has fewer networks than ``promote`` asks for; any search stops earlier
    at its budget."""
    networks = config.initial + config.cycles * sum(config.children)
    if strategy != "hierarchical":
        return networks, networks * proxy_epochs
    stage = proxy_epochs // 3  # every child is trained E epochs, every promotion E more
    return networks, stage * (networks + config.cycles * sum(config.promote))
