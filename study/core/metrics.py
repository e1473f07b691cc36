"""Metric names: defined once, shared by the trainable, the scheduler and the analysis.

A Tune scheduler silently ignores a metric it never sees, so every place that names a metric imports it
from here instead of spelling the string.
"""

# Reported every target epoch.
EPOCH = "epoch"  # target epochs completed (1-based); early stopping's time attribute
VAL_ACC = "val_acc"  # accuracy on the validation split of the target classes, in [0, 1]
VAL_LOSS = "val_loss"  # mean cross-entropy on the validation split (nats)
TRAIN_LOSS = "train_loss"  # mean cross-entropy over the epoch's training batches (nats)
TARGET_FLOPS = "target_flops"  # cumulative FLOPs of the target stage's training steps
SOURCE_FLOPS = "source_flops"  # FLOPs spent training the (shared) source model; 0 if none
SOURCE_KEY = "source_key"  # identity of the source model the trial used ("" for none)
SOURCE_SHARED_BY = "source_shared_by"  # trials that have used this source model so far
WALL_S = "wall_s"  # cumulative seconds of target-stage work in this trial (resumes included)
EPOCH_S = "epoch_s"  # seconds of the last epoch (training + validation)
PASSES = "passes"  # passes over the target images per epoch (the training budget's rule)
TRAINABLE_PARAMS = "trainable_params"
TOTAL_PARAMS = "total_params"
SOURCE_VAL_ACC = "source_val_acc"  # source model's accuracy on the source validation split
FEATURE_CACHE = "feature_cache"  # True if the trial trained on cached frozen-prefix features
FEATURE_CACHE_VIEWS = "feature_cache_views"  # fixed views cached per training image (0: no cache)
FEATURE_CACHE_S = "feature_cache_s"  # s spent computing cached features (in epoch_s/wall_s)
WORKER_RSS_MIB = "worker_rss_mib"  # resident memory of the trial's worker process after the epoch

# Reported once, with the last epoch of a trial that ran to max_epochs.
TEST_ACC = "test_acc"
TEST_PRECISION = "test_precision_macro"
TEST_RECALL = "test_recall_macro"
TEST_F1 = "test_f1_macro"
TEST_CONFUSION = "test_confusion"  # row = true class, column = predicted (target class order)
TEST_PER_CLASS = "test_per_class"  # {class: {precision, recall, f1, support}}
TEST_S = "test_s"  # seconds of the test split's evaluation + report (outside epoch_s and wall_s)
DONE = "finished"  # True on the final report of a trial that ran to max_epochs
REPLAYED = "replayed"  # True on a result reported again after a resume, untrained (trainables/resume.py)

# What the scheduler and the searcher optimise. Validation only: the test split never selects.
OBJECTIVE = VAL_ACC
MODE = "max"

PER_EPOCH = (EPOCH, VAL_ACC, VAL_LOSS, TRAIN_LOSS, TARGET_FLOPS, SOURCE_FLOPS, SOURCE_KEY, SOURCE_SHARED_BY,
             WALL_S, EPOCH_S, TRAINABLE_PARAMS, TOTAL_PARAMS, SOURCE_VAL_ACC, FEATURE_CACHE,
             FEATURE_CACHE_VIEWS, FEATURE_CACHE_S, WORKER_RSS_MIB, PASSES)

# Trial config keys (what the searcher samples; the same names appear in results and reports).
SPLIT = "split"
BACKBONE = "backbone"
INIT = "init"
FROZEN_DEPTH = "frozen_depth"
LR = "lr"
SEED = "seed"
SIZE = "target_size"  # images per target class the run trains on (None: every training image)
CELL = "cell"  # the compared condition: "<split>[/n<size>]/<backbone>/<init>/d<frozen_depth>"
PHASE = "phase"  # "tune" (a learning-rate sample inside its cell) or "confirm" (best config, new seed)
REPEAT = "__trial_index__"  # set by Tune's Repeater when search.repeats > 1
CONFIG_KEYS = (SPLIT, SIZE, BACKBONE, INIT, FROZEN_DEPTH, LR, SEED, CELL, PHASE)
PHASE_TUNE, PHASE_CONFIRM = "tune", "confirm"
