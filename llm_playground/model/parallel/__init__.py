"""Parallel serving on torch.distributed and torch.multiprocessing (docs/PARALLEL.md).

tp_plan.py     which heads, MLP columns and vocabulary rows each tensor-parallel rank holds
tp_layers.py   the row-parallel (all-reduce) and vocabulary-parallel (all-gather) wrappers
tp_shard.py    slices a loaded full model into one rank's shard
tp_runner.py   rank 0's runner proxy (broadcasts each StepPlan) and the followers' loop
tp_engine.py   process groups, spawning the ranks, TensorParallelEngine
random_model.py  random-weight models of any shape (tests, benchmarks), picklable sources
router.py      the prefix-aware (cache-aware) router's policy: per-replica prefix trees
dp_replicas.py engine replicas in processes behind the router, with failover
"""
