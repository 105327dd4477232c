"""Populations: K same-shape runs (one architecture, batch size, epochs, schedule kind, dataset and
precision) trained as one model with stacked weights; members differ in seed, init, learning
rate, weight decay, momentum, label smoothing and early stopping (members.PER_MEMBER).

    pop = build_population([cfg_seed0, cfg_seed1, cfg_seed2])
    outcomes = fit_population(pop)
    net = pop.member_model(1)   # the single model of the run with cfg_seed1, trained
"""
from .members import PER_MEMBER, check_members, config_problems, shared_key
from .stack import StackedNet
from .train import Member, Population, build_population, fit_population

__all__ = ["PER_MEMBER", "Member", "Population", "StackedNet", "build_population", "check_members",
           "config_problems", "fit_population", "shared_key"]
