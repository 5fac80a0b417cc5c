"""Model quality against a known ceiling, baselines on real logs, training throughput.

Every number comes from one run on one set of splits; nothing is tuned on a test split.

Data (prepared in a temporary folder, or ``--workdir``; ``--reuse DIR`` skips it):

- **Simulator.** ``SimulationConfig(days=14)`` (default sizes, start 2026-01-05), the
  Spark batch job for window ends 2026-01-06..2026-01-19, a copy of ``feature_repo/``
  applied with ``feast apply`` (a throwaway ``redis-server`` as its online store), then
  the CTR and CVR training sets of ``training.dataset.build`` with its default split
  (``SplitRequest``: the last whole days, a seventh of the log each, at least one: one
  calibration and one test day for both; the CVR label window of 7 days and an hour
  leaves 6 whole days).
- **TalkingData** (``/work/shared/data/talkingdata_sample``): ingested into its own data
  root, batch job over its dates, ``feast apply``, entity rows from
  ``labelled_impressions(..., "ctr", ...)`` (every row is a click; the install is the
  ``conversion`` column), features of the ``cvr_v1`` service at each row's instant,
  request features. Label = install. Split by timestamp: first 4/6 of the span train
  (about 2 days), next 1/6 calibration, last 1/6 test (about half a day each).
- **Open Bandit** (``/work/shared/data/open_bandit``): the same path with the ``ctr_v1``
  service and label = click, split the same way over its 7 days.

Measurements:

1. Simulator CTR, test days: our LR, our DCN-v2 (defaults, and the variant chosen on
   the calibration split among a few cheap ones), LightGBM, deepctr-torch 0.3.0's DCN
   (matrix cross = DCN-v2, embedding 16, 3 cross layers, DNN (256, 128), our loop's
   batch (4096 here), Adam at our learning rate, regularised as ours, below), and the
   ceiling: the simulator's true ``p_click`` on the same rows. Every model's test
   predictions are calibrated with ``artifact.calibration`` fitted on its
   calibration-split predictions; AUC, NE, ECE and quantile ECE, and the gaps to the
   ceiling (AUC difference, relative NE difference).
2. Simulator CVR, clicked test rows: our ESMM, deepctr-torch's ESMM (its towers are
   MLPs; pCVR = pCTCVR / pCTR), a DCN trained on clicked rows only (the naive,
   sample-selection-biased approach, our code), LightGBM on clicked rows, and the
   ceiling ``p_conversion_given_click``.
3. and 4. TalkingData and Open Bandit: our DCN against LightGBM, AUC with 95% bootstrap
   intervals and a paired bootstrap interval of the difference (same resampled rows).
5. Training throughput, ours vs deepctr-torch's DCN on the CTR train split, same
   architecture, batch size and regularisation, ``torch.set_num_threads(2)``. The two
   default runs of part 1 train in alternation in one process: ours an epoch, deepctr
   an epoch, ours, deepctr, ... (``bench.quality.throughput``), so load on the shared
   machine hits both alike. Training-loop time of each epoch (ours: ``fit_model``'s own
   epoch timer; deepctr: a callback from epoch begin to epoch end, so its per-call
   input concatenation is excluded); over the epochs that ran in alternation: median
   epoch time and examples/s of each, the median of the per-pair ratios and the ratio
   of the fastest epochs, each against the 3x goal.

Regularisation, the same on both sides of every deepctr-torch comparison:

- **Ours** (``training.train.fit_model`` with ``TrainConfig`` defaults): no L2 (Adam's
  ``weight_decay`` 0), dropout 0.1 after each ReLU of the MLP (the cross layers have
  none), 5% of hashed ids (user, ad, advertiser, campaign and id-valued features)
  replaced by their out-of-vocabulary row per batch, early stopping on the calibration
  split's log loss with patience 1, the best epoch's weights kept. After training,
  hashed buckets no training id reached point at the out-of-vocabulary row (not a
  regulariser: it decides how unseen ids score).
- **deepctr-torch**: its defaults would add L2 1e-5 on the linear part, the embeddings
  and the cross kernels (summed over whole tables every step); all ``l2_reg_*`` are 0
  here, Adam's ``weight_decay`` is ours times the batch (its loss is a sum over the
  batch, ours a mean), ``dnn_dropout`` 0.1 after each ReLU of the DNN, the same 5% of
  hashed ids set to the out-of-vocabulary row, drawn afresh each epoch rather than each
  batch (each id of each row still has a 5% chance per epoch), the same early stopping.
  What stays its own: ``init_std`` 1e-4 and a linear logit over the same columns.

Every model sees the same inputs: the feature map fitted on the train split
(``training.train.fit_feature_map``). LightGBM gets its sparse columns as categorical
features (codes) and the standardised dense columns; deepctr-torch gets the sparse
columns as ``SparseFeat`` (vocabulary = the field's cardinality) and the dense columns
as ``DenseFeat``.

    python -m bench.quality [--workdir DIR] [--reuse DIR] [--parts sim_ctr sim_cvr ...]
    python -m bench.quality --quick

Results: ``bench/results/quality.json``, rows of ``BENCHMARKS.md`` and its model-quality
section. ``--quick`` runs every part small (``plan.QUICK``: 11 simulated days of 2,500
users, 200 ads and 6,000 impressions a day, 2 epochs, one DCN variant; the real logs
whole, skipped when ``../shared/data`` is absent) in about three minutes on two cores,
to check that the benchmark works; it writes ``bench/results/quick/quality.json`` only.
"""
