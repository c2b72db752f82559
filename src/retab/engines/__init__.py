"""The loops the stages share: the training loop (training), the start-up, weights and per-image
inference loop of every stage (stage_support), the random walk over a list of pictures
(walk_inference) and the evaluation (evaluation). Engines import the algorithms, models, data and
helpers below them, never retab.stages."""
