"""Training K >= 1 runs: the loop (loop.py), the two ways of stepping runs (single.py: one run's
own module; stacked.py: K modules as one through torch.func), the one update written by hand
(member_optim.py: a learning rate per member), each member's batches (batches.py), the loss field
(losses.py), which runs can train together (plan.py), and the builder that makes a trainee from
configs, a model source and data (build.py). pipeline.train_runs drives them."""
